"""Targets in (Pillow), outputs out (atomic), plots, video, latents; FFHQ alignment in ``io.align``."""
