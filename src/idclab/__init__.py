"""idclab: invasive ductal carcinoma (IDC) detection in breast histopathology patches, with honest handling
of class imbalance and MLflow experiment tracking."""

__version__ = "0.1.0"
