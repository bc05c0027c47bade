"""CEED-VLA training: teacher behaviour cloning, Jacobi-trajectory collection, consistency distillation."""
