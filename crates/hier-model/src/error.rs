use thiserror::Error;

/// A configuration the model cannot be built from.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    /// The JSON does not fit the schema (unknown key, wrong type, ...).
    #[error("config key `{path}`: {message}")]
    Parse {
        /// JSON path of the offending value, e.g. `window_sizes[1]`.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A value breaks one of the model's rules.
    #[error("config key `{key}`: {problem}; {fix}")]
    Invalid {
        /// The config key at fault.
        key: &'static str,
        /// What is wrong with its value.
        problem: String,
        /// How to make it valid.
        fix: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        key: &'static str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// Input the model cannot run on.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum InputError {
    /// More tokens than `seq_len`.
    #[error("input of {len} tokens is longer than the model's seq_len {seq_len}; crop it to the last {seq_len} tokens")]
    TooLong {
        /// Tokens given.
        len: usize,
        /// The model's longest input.
        seq_len: usize,
    },
    /// No tokens.
    #[error("input is empty; give at least {min} token(s)")]
    TooShort {
        /// Fewest tokens the operation needs.
        min: usize,
    },
    /// A token id outside `0..num_tokens`.
    #[error("token id {id} at position {position} is outside the vocabulary 0..{num_tokens}")]
    OutOfVocabulary {
        /// The offending id.
        id: i64,
        /// Its index in the flattened input.
        position: usize,
        /// The model's vocabulary size.
        num_tokens: usize,
    },
    /// Too few positions in a hierarchy for the next-latent rollouts.
    #[error("hierarchy {factor}x has {len} positions, but next-latent prediction with num_rollouts {rollouts} needs more than {rollouts}; use a longer sequence")]
    TooShortForRollouts {
        /// Compression factor of the hierarchy.
        factor: usize,
        /// Its number of (compressed) positions.
        len: usize,
        /// The config's `num_rollouts`.
        rollouts: usize,
    },
    /// An invalid generation input: a sampling option (temperature, filter threshold), a
    /// prompt, or ids that do not fit the batch.
    #[error("generation option `{option}`: {problem}")]
    Generation {
        /// The option or argument at fault (`temperature`, `filter_thres`, `ids`, ...).
        option: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A split or text too short to predict anything from.
    #[error("too little data: {len} bytes leave no byte to predict (only labels equal to ignore_index, or fewer than 2 bytes); give at least one window of seq_len + 1 = {needed} bytes")]
    TooLittleData {
        /// Bytes given.
        len: usize,
        /// Bytes of one full window, `seq_len + 1`.
        needed: usize,
    },
    /// NaN or infinite values came out of the model: its weights are broken.
    #[error("the model's {what} are not finite (NaN or infinity); its weights are broken: retrain it (e.g. with a lower learning rate) or load another model")]
    NonFinite {
        /// What was not finite (e.g. `logits`, `losses`).
        what: String,
    },
}

/// A model directory or weights file that cannot be loaded or written.
#[derive(Debug, Error)]
pub enum LoadError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` cannot be parsed or is invalid.
    #[error("{path}: {source}")]
    Config {
        /// The `config.json` file.
        path: String,
        /// Why it was refused.
        #[source]
        source: ConfigError,
    },
    /// Not a safetensors file.
    #[error("{path}: not a valid safetensors file ({message}); re-save the model")]
    Format {
        /// The file, or the tensor key that could not be applied.
        path: String,
        /// The safetensors or burn-store message.
        message: String,
    },
    /// A tensor the config needs is absent.
    #[error("weights are missing tensor `{key}` (expected shape {expected:?}); the file does not belong to this config")]
    Missing {
        /// Reference key of the absent tensor.
        key: String,
        /// The shape the config gives it.
        expected: Vec<usize>,
    },
    /// Tensors the config has no place for.
    #[error("weights have unexpected tensor(s) {keys:?}; the file does not belong to this config")]
    Unexpected {
        /// Their keys.
        keys: Vec<String>,
    },
    /// A tensor of the wrong shape.
    #[error("tensor `{key}` has shape {found:?} but the config needs {expected:?}; the file does not belong to this config")]
    Shape {
        /// Reference key of the tensor.
        key: String,
        /// The shape the config gives it.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor that is not `F32`.
    #[error("tensor `{key}` has dtype {found}, expected F32")]
    Dtype {
        /// Reference key of the tensor.
        key: String,
        /// Its dtype in the file.
        found: String,
    },
    /// A stored rotary constant that differs from the recomputed one.
    #[error("constant tensor `{key}` differs from 1/10000^(2i/dim_head) (max difference {difference}); the file was altered")]
    Constant {
        /// Reference key of the constant (a rotary `inv_freq` or `freqs`).
        key: String,
        /// Largest absolute difference from the recomputed values.
        difference: f32,
    },
}
