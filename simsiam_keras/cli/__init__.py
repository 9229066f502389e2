"""The commands (`simsiam-pretrain`, `simsiam-knn-eval`, ...): parse flags, call the library, print."""
