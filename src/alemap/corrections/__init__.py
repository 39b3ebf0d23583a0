"""Corrections layer: voxel-wise thresholds and cluster-level inference.

Layer 6 of alemap: uses the statistics and the Monte Carlo maxima from
:mod:`alemap.inference`; knows nothing of files or the command line.
"""

from alemap.corrections.cluster import ClusterInference, cluster_inference, label_clusters
from alemap.corrections.voxel import fdr_threshold, fwe_p_from_null

__all__ = ["ClusterInference", "cluster_inference", "label_clusters", "fdr_threshold", "fwe_p_from_null"]
