"""OCI image pieces: media types, descriptors, image layouts."""
