use thiserror::Error;

/// A configuration the model cannot be built from.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    /// The JSON does not fit the schema (unknown key, wrong type, ...).
    #[error("config key `{path}`: {message}")]
    Parse { path: String, message: String },
    /// A value breaks one of the model's rules.
    #[error("config key `{key}`: {problem}; {fix}")]
    Invalid {
        key: &'static str,
        problem: String,
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
    TooLong { len: usize, seq_len: usize },
    /// No tokens.
    #[error("input is empty; give at least {min} token(s)")]
    TooShort { min: usize },
    /// A token id outside `0..num_tokens`.
    #[error("token id {id} at position {position} is outside the vocabulary 0..{num_tokens}")]
    OutOfVocabulary {
        id: i64,
        position: usize,
        num_tokens: usize,
    },
    /// Too few positions in a hierarchy for the next-latent rollouts.
    #[error("hierarchy {factor}x has {len} positions, but next-latent prediction with num_rollouts {rollouts} needs more than {rollouts}; use a longer sequence")]
    TooShortForRollouts {
        factor: usize,
        len: usize,
        rollouts: usize,
    },
    /// An invalid generation input: a sampling option (temperature, filter threshold), a
    /// prompt, or ids that do not fit the batch.
    #[error("generation option `{option}`: {problem}")]
    Generation {
        option: &'static str,
        problem: String,
    },
    /// A split or text too short to predict anything from.
    #[error("too little data: {len} bytes leave no byte to predict (only labels equal to ignore_index, or fewer than 2 bytes); give at least one window of seq_len + 1 = {needed} bytes")]
    TooLittleData { len: usize, needed: usize },
    /// NaN or infinite values came out of the model: its weights are broken.
    #[error("the model's {what} are not finite (NaN or infinity); its weights are broken: retrain it (e.g. with a lower learning rate) or load another model")]
    NonFinite { what: String },
}

/// A model directory or weights file that cannot be loaded or written.
#[derive(Debug, Error)]
pub enum LoadError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `config.json` cannot be parsed or is invalid.
    #[error("{path}: {source}")]
    Config {
        path: String,
        #[source]
        source: ConfigError,
    },
    /// Not a safetensors file.
    #[error("{path}: not a valid safetensors file ({message}); re-save the model")]
    Format { path: String, message: String },
    /// A tensor the config needs is absent.
    #[error("weights are missing tensor `{key}` (expected shape {expected:?}); the file does not belong to this config")]
    Missing { key: String, expected: Vec<usize> },
    /// Tensors the config has no place for.
    #[error("weights have unexpected tensor(s) {keys:?}; the file does not belong to this config")]
    Unexpected { keys: Vec<String> },
    /// A tensor of the wrong shape.
    #[error("tensor `{key}` has shape {found:?} but the config needs {expected:?}; the file does not belong to this config")]
    Shape {
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor that is not `F32`.
    #[error("tensor `{key}` has dtype {found}, expected F32")]
    Dtype { key: String, found: String },
    /// A stored rotary constant that differs from the recomputed one.
    #[error("constant tensor `{key}` differs from 1/10000^(2i/dim_head) (max difference {difference}); the file was altered")]
    Constant { key: String, difference: f32 },
}
