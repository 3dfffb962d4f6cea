"""Training-time pruning: masks that hold through optimizer steps, gradual pruning, lottery tickets, recovery fine-tuning."""
