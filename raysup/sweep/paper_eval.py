"""A ``--paper`` sweep's evaluation: each row scored as its paper's table scores it, by the sweep
method's paper protocols (:data:`PAPER_PROTOCOLS`, e.g. XDC's full finetuning, Table 11 of
papers/xdc.md L412-417), on the downstream set, not by our linear probe."""
from __future__ import annotations

from raysup import runner
from raysup.methods import method_module
from raysup.protocol_specs import FinetuneProtocol
from raysup.protocols import paper_protocols, run_protocols


def paper_objective(s, cfg, checkpoint: str | None, out: str) -> dict[str, float]:
    """Top-1 per protocol key of ``checkpoint`` (None: random init, the papers' "Scratch") under
    the paper protocols of ``s.method`` on ``s.eval_data`` (else ``s.data``) with ``s.labels``;
    runs in ``out/paper_protocol``, for ``s.paper_epochs`` epochs when set. A baseline of another method (the supervised one) gets the
    finetuning protocols only (a frozen protocol's tap is the method's own); a finetuning of an
    encoder the model lacks (XDC's video protocols for ``xdc_2audio``, Cross and Learn's
    frame-difference network's for a flow run) is left out: no value."""
    data = runner.open_data(s.eval_data or s.data, cfg)
    encoders = set(method_module(cfg.method_name).build(cfg, data.specs).encoders())
    protocols = tuple(p for p in paper_protocols(s.method) if usable(p, encoders, own=cfg.method_name == s.method))
    if not protocols:
        return {}
    return run_protocols(cfg, data, s.labels, checkpoint, f"{out.rstrip('/')}/paper_protocol", protocols, epochs=s.paper_epochs or None)


def usable(p, encoders: set[str], *, own: bool) -> bool:
    """Whether protocol ``p`` can score a model with these ``encoders`` (``own``: of the sweep's method)."""
    if not isinstance(p, FinetuneProtocol):
        return own
    return p.encoder in encoders
