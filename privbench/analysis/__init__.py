"""Analysis: what the numbers mean. Membership metrics (ROC, TPR at low FPR, empirical epsilon),
the DP theory that bounds them, Feldman-Zhang memorization, and the matching of reconstructed
images to training images. Pure functions of arrays: nothing here trains or stores."""
