"""Images: bounded decoding (size, pixels, aspect ratio checked from the header), preprocessing for the encoder, thumbnails."""
