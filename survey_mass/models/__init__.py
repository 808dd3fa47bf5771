"""The networks (:mod:`.networks`), the richness baseline (:mod:`.richness`) and model bundles (:mod:`.bundle`)."""
