"""Network modules: backbone, heads, camera encoder/decoder and the composed DA3 networks."""
