"""HTTP entrypoints: parse and authorise, then call a domain service."""
