"""Lab benchmarks, apart from the product package: the scale run (`make bench-scale`), the
supported-tower matrix (`make bench-families`) and the feature-cache speed-up. They drive
p4q-export as a user does and are not installed with it."""
