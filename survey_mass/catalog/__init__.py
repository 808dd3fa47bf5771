"""Mass catalogs in the HATS layout: writing (:mod:`.writer`) and querying (:mod:`.query`)."""
