"""Training the two-stage CNN and the richness baseline (:mod:`.train`), and the training report (:mod:`.report`)."""
