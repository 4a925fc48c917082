//! hier-train: data and the training loop for hier (work in progress; see the issues).
