"""Adapters that put recommenders trained elsewhere behind
:class:`whyrec.models.outside.OutsideScorer`.

=============  =====================================================  ===============
adapter        wraps                                                  extra
=============  =====================================================  ===============
callable       a Python function from histories to all-item scores    —
torchscript    a TorchScript file ``forward(items, lengths)``          —
implicit-als   an ``implicit`` AlternatingLeastSquares model          ``[implicit]``
implicit-bpr   an ``implicit`` BayesianPersonalizedRanking model      ``[implicit]``
lenskit        a trained LensKit pipeline's scorer                    ``[lenskit]``
=============  =====================================================  ===============

Each module is imported only when its adapter is used, so an extra that is not
installed costs nothing until then (and then says which extra to install).
"""
