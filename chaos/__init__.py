"""The chaos suite: fotoowl imports under real faults of its servers, processes and source (`make chaos`)."""
