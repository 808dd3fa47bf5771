"""Pictures: footprint maps, cutout composites and (later) attribution and catalog reports."""
