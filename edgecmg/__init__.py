"""edgecmg: language-guided visual anomaly detection for the edge."""
__version__ = "0.1.0"
