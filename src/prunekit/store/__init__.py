"""What a run leaves on disk: the saved folder, its mask file and manifest, sparse export formats, ``info``."""
