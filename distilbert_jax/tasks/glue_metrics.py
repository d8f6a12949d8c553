"""The GLUE benchmark's metrics of predictions against labels, as plain functions of [n] arrays.

Each returns a float (a fraction, not percent) and is defined where the formula is 0/0: F1,
Matthews and the correlations are 0 there, as sklearn's, never NaN.
"""
from __future__ import annotations

import numpy as np
import scipy.stats


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(predictions == labels))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
  """F1 of the positive class 1; 0 when there is no positive in either (as sklearn)."""
  tp = np.sum((predictions == 1) & (labels == 1))
  fp = np.sum((predictions == 1) & (labels != 1))
  fn = np.sum((predictions != 1) & (labels == 1))
  return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Matthews correlation from the confusion matrix (multi-class form, as sklearn); 0 when the
  predictions or the labels are constant, where the formula is 0/0."""
  classes, inverse = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
  n = len(labels)
  confusion = np.zeros((len(classes), len(classes)), np.float64)
  np.add.at(confusion, (inverse[:n], inverse[n:]), 1)
  true_sum, pred_sum = confusion.sum(axis=1), confusion.sum(axis=0)
  cov_tp = np.trace(confusion) * n - true_sum @ pred_sum
  cov_pp = n * n - pred_sum @ pred_sum
  cov_tt = n * n - true_sum @ true_sum
  return float(cov_tp / np.sqrt(cov_tt * cov_pp)) if cov_tt * cov_pp else 0.0


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Pearson correlation; 0 (not NaN) when either side is constant."""
  x = predictions.astype(np.float64) - predictions.mean()
  y = labels.astype(np.float64) - labels.mean()
  denominator = np.sqrt((x @ x) * (y @ y))
  return float(np.clip(x @ y / denominator, -1.0, 1.0)) if denominator else 0.0


def spearmanr(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Spearman rank correlation: Pearson of the ranks (ties get their mean rank)."""
  return pearson(scipy.stats.rankdata(predictions), scipy.stats.rankdata(labels))


# By the names that Task.metrics uses.
METRICS = {"accuracy": accuracy, "f1": f1, "matthews_correlation": matthews_correlation,
           "pearson": pearson, "spearmanr": spearmanr}
