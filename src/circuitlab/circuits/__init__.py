"""Circuit discovery: the computational graph of a model, circuits (sets of its edges) and edge scorers.

- :class:`Graph` (:mod:`circuitlab.circuits.graph`): senders (embedding, heads, MLPs) and receivers (each head's
  q/k/v input, each MLP's input, the logits) of the residual stream, and the edges between them;
- :class:`Circuit` (:mod:`circuitlab.circuits.circuit`): a set of edges with optional scores: top-k, compare,
  JSON, DataFrame; reference circuits from edges or node names;
- :func:`eap` and :func:`eap_ig` (:mod:`circuitlab.circuits.eap`): edge attribution patching and its
  integrated-gradients variant, a score for every edge from one (or ``steps``) backward passes;
- :func:`patch_edges` (:mod:`circuitlab.circuits.patch`): exact edge patching, many edge sets per batched pass;
  :func:`faithfulness` and :func:`faithfulness_curve` (:mod:`circuitlab.circuits.faithfulness`): how much of the
  behaviour a circuit (or its top-k edges) carries;
- :func:`acdc` (:mod:`circuitlab.circuits.acdc`): ACDC (Conmy et al. 2023), exact, with speculative batching;
- :func:`roc` and :func:`roc_auc` (:mod:`circuitlab.circuits.roc`): ROC curve and AUC of any scorer against a
  reference circuit, edge and node level; :func:`induction_reference` (:mod:`circuitlab.circuits.reference`): a
  model's induction circuit, established by head scores and exact path patching.
"""

from circuitlab.circuits.acdc import acdc
from circuitlab.circuits.circuit import Circuit, Comparison
from circuitlab.circuits.eap import eap, eap_ig, receiver_inputs
from circuitlab.circuits.faithfulness import faithfulness, faithfulness_curve
from circuitlab.circuits.graph import Edge, Graph, Node
from circuitlab.circuits.patch import EdgePatcher, patch_edges
from circuitlab.circuits.reference import induction_reference, reference_from_edges
from circuitlab.circuits.roc import RocCurve, roc, roc_auc

__all__ = ["Circuit", "Comparison", "Edge", "EdgePatcher", "Graph", "Node", "acdc", "eap", "eap_ig", "faithfulness",
           "faithfulness_curve", "patch_edges", "receiver_inputs"]
__all__ += ["RocCurve", "induction_reference", "reference_from_edges", "roc", "roc_auc"]
