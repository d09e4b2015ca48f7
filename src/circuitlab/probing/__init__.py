"""Probing: what linguistic knowledge a model's representations hold, and how much of it the probe supplies.

- :mod:`~circuitlab.tasks.sentences` (also importable as ``circuitlab.probing.data``): labelled sentences
  (:class:`Sentence`) from CoNLL-U (:func:`read_conllu`),
  spaCy (:func:`label_text`), a grammar with gold trees (:func:`template_sentences`), and the default offline
  data (:func:`default_sentences`: King James verses and fortune cookies from Debian, labelled by spaCy);
- :mod:`~circuitlab.probing.align`: words to subword tokens (``align.align``), skipped words counted;
- :mod:`~circuitlab.probing.activations`: word representations at many hooks in one forward pass per batch,
  cached on disk (:func:`collect` -> :class:`WordActivations`);
- :mod:`~circuitlab.probing.classifier`: linear and MLP-1 probes, Hewitt & Liang control tasks and selectivity,
  layer sweeps with intervals over seeds (:func:`probe_sweep`), sentence-level probes (:func:`sentence_sweep`);
- :mod:`~circuitlab.probing.heads`: attention heads as dependency finders, against the best fixed offset
  (:func:`head_sweep`);
- :mod:`~circuitlab.probing.structural`: Hewitt & Manning's distance and depth probes, UUAS, Spearman, root
  accuracy, the linear baseline (:func:`structural_sweep`);
- :mod:`~circuitlab.probing.cloze`: LAMA-style cloze P@k (:func:`cloze`) and its controls, an invented subject and
  shuffled block weights, with the gain over them (:func:`cloze_control`, Zhong et al. 2021);
- :mod:`~circuitlab.probing.depth`: word-level syntax low, sentence-level semantics high: linear probes per layer for
  UPOS / dependency labels and for tense / voice / sentence type, each over its maximum, with expected layers
  (:func:`depth_profile`);
- :mod:`~circuitlab.probing.gaussian`: Gaussian probing (Torroba Hennigen et al. 2020): neurons chosen greedily under
  a Gaussian class-conditional model against the linear probe's ranking, with selectivity (:func:`gaussian_sweep`);
- :mod:`~circuitlab.probing.coreference`: coreference by representation similarity (Sorodoc et al. 2020): the
  pronoun's nearest candidate antecedent per layer, against first- and nearest-candidate baselines
  (:func:`coreference_similarity`);
- :mod:`~circuitlab.probing.edge`: Tenney et al.'s edge probing: spans and pairs of spans (POS, dependency arc
  labels, entity types) from a learned scalar mix of the layers, with the lexical baseline (:func:`edge_probe`).
"""

from circuitlab.probing.activations import WordActivations, collect, default_hooks
from circuitlab.probing.align import Alignment
from circuitlab.probing.classifier import control_labels, sentence_sweep, split_sentences, train_probe
from circuitlab.probing.classifier import sweep as probe_sweep
from circuitlab.tasks.sentences import Sentence, default_sentences, label_text, read_conllu, template_sentences, \
    write_conllu
from circuitlab.probing.heads import head_sweep, score_heads, word_attention
from circuitlab.probing.structural import linear_baseline, mst_edges, score_trees, train_structural_probe
from circuitlab.probing.structural import sweep as structural_sweep

# minimal pairs (parameter-free probing): :mod:`~circuitlab.probing.minimal_pairs`
from circuitlab.probing.minimal_pairs import MinimalPair, PairScores, continuation_logprob, read_blimp, score_pairs, \
    sentence_logprob, template_pairs

# cloze (LAMA-style, parameter-free probing): :mod:`~circuitlab.probing.cloze`
from circuitlab.probing.cloze import CLOZE_TEMPLATES, ClozeScores, cloze, frequency_baseline
from circuitlab.probing.cloze import ClozeControl, cloze_control, control_names, shuffled_model

# the depth profile: :mod:`~circuitlab.probing.depth`
from circuitlab.probing.depth import DepthProfile, depth_profile, expected_layer, hook_depth

# Gaussian probing: :mod:`~circuitlab.probing.gaussian`
from circuitlab.probing.gaussian import GaussianProbe, gaussian_sweep, greedy_neurons, linear_ranking

# coreference by similarity: :mod:`~circuitlab.probing.coreference`
from circuitlab.probing.coreference import CorefScores, coreference_similarity

# edge probing (Tenney et al. 2019): :mod:`~circuitlab.probing.edge`
from circuitlab.probing.edge import EdgeScores, ScalarMix, edge_examples, edge_probe

__all__ = ["Alignment", "Sentence", "WordActivations", "collect", "control_labels", "default_hooks",
           "default_sentences", "head_sweep", "label_text", "linear_baseline", "mst_edges", "probe_sweep",
           "read_conllu", "score_heads", "score_trees", "sentence_sweep", "split_sentences", "structural_sweep",
           "template_sentences", "train_probe", "train_structural_probe", "word_attention", "write_conllu"]

# minimal pairs
__all__ += ["MinimalPair", "PairScores", "continuation_logprob", "read_blimp", "score_pairs", "sentence_logprob",
            "template_pairs"]

# cloze
__all__ += ["CLOZE_TEMPLATES", "ClozeScores", "cloze", "frequency_baseline"]
__all__ += ["ClozeControl", "cloze_control", "control_names", "shuffled_model"]

# the depth profile
__all__ += ["DepthProfile", "depth_profile", "expected_layer", "hook_depth"]

# Gaussian probing
__all__ += ["GaussianProbe", "gaussian_sweep", "greedy_neurons", "linear_ranking"]

# coreference by similarity
__all__ += ["CorefScores", "coreference_similarity"]

# edge probing
__all__ += ["EdgeScores", "ScalarMix", "edge_examples", "edge_probe"]
