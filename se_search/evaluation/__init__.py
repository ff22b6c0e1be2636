"""How a candidate gets its accuracy: the data sets, the training loops, early stopping, and
the strategies (``train`` from scratch, ``finetune`` from pretrained weights, ``oneshot``
on a weight-sharing supernet), behind one :class:`~se_search.evaluation.evaluator.Evaluator`
that every engine calls.
"""
