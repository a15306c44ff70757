"""The only package that touches key material: safe recipes over vetted primitives."""
