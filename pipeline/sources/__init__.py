"""Readers of the formats the stages take in: video and audio decoding, downloads, LLP's
annotation files, dense event files, video discovery, `.npy` files and release archives,
checkpoints and config files. Nothing here knows a stage; the stages above call these."""
