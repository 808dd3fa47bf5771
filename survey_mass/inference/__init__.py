"""Inference: one partition (:mod:`.predict`, no Dask), the Dask cluster (:mod:`.cluster`) and the run (:mod:`.run`)."""
