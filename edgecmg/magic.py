"""The first eight bytes of each file kind edgecmg writes, in a module of its own so that the readers
of every kind can tell one from another (a model given where an engine goes, a renamed file) without
importing each other: engine_file.py is above artifact.py, and imports no torch."""
ARTIFACT = b"EDGECMG\0"  # *.edgecmg, edgecmg.artifact
ENGINE = b"EDGECMGE"  # *.engine, edgecmg.engine_file
