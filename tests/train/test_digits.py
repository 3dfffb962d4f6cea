from prunekit.train.digits import DigitsSetup, run_gradual_vs_oneshot, run_lottery


def test_gradual_vs_oneshot_reaches_the_sparsity_and_learns():
    result = run_gradual_vs_oneshot(0.9, seeds=1, setup=DigitsSetup(epochs=4))
    run = result["runs"][0]
    assert run["dense"] > 0.8 and run["gradual"] > 0.5 and run["oneshot_finetuned"] > 0.5
    assert run["oneshot_finetuned"] >= run["oneshot_no_finetune"] - 0.05


def test_lottery_with_rewinding_runs():
    result = run_lottery(rounds=2, prune_fraction=0.5, seeds=1, rewind_epochs=1, setup=DigitsSetup(epochs=2))
    assert [round(r["sparsity"], 3) for r in result["runs"][0]] == [0.0, 0.5, 0.75]
    assert result["rewind_epochs"] == 1 and all(r["random_reinit"] is not None for r in result["runs"][0][1:])
