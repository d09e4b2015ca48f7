"""Model editing (issue 35): ROME and MEMIT, closing the loop from causal tracing to the weights.

- :mod:`circuitlab.editing.rome`: ROME (Meng et al. 2022), one fact into one MLP layer by a rank-one update;
- :mod:`circuitlab.editing.memit`: MEMIT (Meng et al. 2023), a batch of facts spread over several layers;
- :mod:`circuitlab.editing.finetune`: the fine-tuning baseline (FT, FT-L) on the same layer;
- :mod:`circuitlab.editing.covariance`: the key second moment ``C = E[k k^T]``, cached on disk;
- :mod:`circuitlab.editing.edit`: requests, the :class:`Edit` (a context manager, or a new model), the shared steps;
- :mod:`circuitlab.editing.evaluate`: CounterFact's metrics on :mod:`circuitlab.tasks.counterfact` cases.
"""

from circuitlab.editing.covariance import KeyCovariance, default_corpus, key_covariance
from circuitlab.editing.edit import Edit, Request, combine
from circuitlab.editing.evaluate import EditScores, edit_table, evaluate_edit, ngram_entropy
from circuitlab.editing.finetune import fine_tune
from circuitlab.editing.memit import default_layers, default_mom2_weight, memit, memit_update
from circuitlab.editing.rome import default_layer, rome, rome_update

__all__ = ["Edit", "EditScores", "KeyCovariance", "Request", "combine", "default_corpus", "default_layer",
           "default_layers", "default_mom2_weight", "edit_table", "evaluate_edit", "fine_tune", "key_covariance",
           "memit", "memit_update", "ngram_entropy", "rome", "rome_update"]
