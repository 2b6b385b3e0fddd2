"""Plain Python: the models, rules and services of Stockroom; no framework imports."""
