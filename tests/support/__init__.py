"""What grulite's tests and developer tools share (tools put tests/ on
sys.path to import it; it never imports grulite).

* ``support.reference``: THE numpy reference GRU, float64, written from the
  formula in the design document (both reset_after variants, forward /
  reverse / both directions, lengths, h0) and the dense head on top.
* ``support.models``: random PyTorch-style state_dicts (nn.GRU, nn.Linear).
* ``support.files``: file writers: deterministic ``.npz``, hand-made zips,
  torch.save'd files written opcode by opcode (no torch needed),
  safetensors.
"""
