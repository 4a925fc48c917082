//! Data parallelism: one model replica per device (a thread each) and per process (`--nodes`).
//! Every replica draws its own crops; before each optimizer step the gradients are averaged
//! with burn-collective's all-reduce, so every replica takes the same step and they stay equal
//! without broadcasting weights.
//!
//! All replicas must make the same collective calls in the same order (burn-collective matches
//! calls by arrival order), so gradients are reduced in module order — never by `ParamId`, which
//! is random per process — and every decision to stop is itself reduced.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Float, Tensor, TensorData, TensorPrimitive};
use burn_collective::{
    all_reduce, finish_collective, register, CollectiveConfig, CollectiveError, PeerId,
    ReduceOperation,
};
use burn_communication::Address;
use thiserror::Error;

/// A data-parallel run that cannot be set up or continued.
#[derive(Debug, Error)]
pub enum ParallelError {
    /// A node or orchestrator address that is not `ws://HOST:PORT`.
    #[error("{what} `{value}` is not a WebSocket address; write it as ws://HOST:PORT")]
    Address {
        /// The option it came from, e.g. `--node-address`.
        what: &'static str,
        /// The address given.
        value: String,
    },
    /// A node rank not below the number of nodes.
    #[error("--node-rank {rank} is outside 0..{nodes} (--nodes {nodes})")]
    NodeRank {
        /// This node's rank.
        rank: usize,
        /// Nodes in the run.
        nodes: usize,
    },
    /// Zero devices (replicas) on this node.
    #[error("--devices must be at least 1")]
    NoDevices,
    /// burn-collective's registration, all-reduce or shutdown failed.
    #[error("collective communication failed: {0:?}; check that every node runs with the same --nodes/--devices and reaches the orchestrator")]
    Collective(CollectiveError),
    /// Reading a reduced value back from the device failed.
    #[error("reading an all-reduced value from the device failed: {0}")]
    Read(String),
    /// Another replica's step failed, so this one stopped too.
    #[error("another replica failed (rank 0 reports why); this replica stopped with it")]
    PeerFailed,
    /// [`BatchSplit::Shared`] with more replicas than rows in a micro-batch.
    #[error("a batch of {batch} rows cannot be shared by {replicas} replicas; use at most {batch} replicas or a larger batch")]
    BatchTooSmall {
        /// `batch_size`.
        batch: usize,
        /// Replicas over all nodes.
        replicas: usize,
    },
}

/// How the replicas of a data-parallel run share the work of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchSplit {
    /// Every replica trains on `batch_size` crops of its own, so `W` replicas see `W ×
    /// batch_size` crops a step (PyTorch DDP's per-device batch; `hier train --devices N`).
    #[default]
    PerReplica,
    /// The replicas split each micro-batch of `batch_size` crops between them, replica `r` of
    /// `W` taking rows `r·B/W .. (r+1)·B/W`, weighted by its share of the rows: the run follows
    /// one device's within float rounding (hier's CPU default, one replica per core).
    Shared,
}

/// Where a data-parallel run's replicas are and how they share the batch.
#[derive(Debug, Clone, Copy)]
pub struct Replicas<'a, D> {
    /// One replica per entry, on a thread of its own.
    pub devices: &'a [D],
    /// The other processes of a multi-node run, if any.
    pub cluster: Option<&'a Cluster>,
    /// How the replicas share the work of a step.
    pub split: BatchSplit,
}

/// One replica's part of every micro-batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    /// The rows of the micro-batch's crops this replica trains on.
    pub rows: std::ops::Range<usize>,
    /// This replica's weight in the step's mean (the weights of all replicas add up to 1).
    pub weight: f64,
    /// Added to the micro-batch index when drawing crops: replicas with their own batches draw
    /// the micro-batches `rank · grad_accum ..` that one device accumulating them all would.
    pub micro_offset: u64,
}

impl BatchSplit {
    /// The part of each micro-batch of `batch` rows that replica `rank` of `world` trains on.
    pub fn shard(
        self,
        rank: usize,
        world: usize,
        batch: usize,
        grad_accum: usize,
    ) -> Result<Shard, ParallelError> {
        match self {
            BatchSplit::PerReplica => Ok(Shard {
                rows: 0..batch,
                weight: 1.0 / world as f64,
                micro_offset: (rank * grad_accum) as u64,
            }),
            BatchSplit::Shared if batch < world => Err(ParallelError::BatchTooSmall {
                batch,
                replicas: world,
            }),
            BatchSplit::Shared => {
                let rows = rank * batch / world..(rank + 1) * batch / world;
                Ok(Shard {
                    weight: rows.len() as f64 / batch as f64,
                    rows,
                    micro_offset: 0,
                })
            }
        }
    }
}

impl From<CollectiveError> for ParallelError {
    fn from(e: CollectiveError) -> Self {
        ParallelError::Collective(e)
    }
}

/// Where this process sits in a multi-node run.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Processes (machines) in the run.
    pub nodes: usize,
    /// This process's rank in `0..nodes`; global rank 0 writes the run directory.
    pub node_rank: usize,
    /// The orchestrator started with `hier orchestrator --port P`: `ws://HOST:P`.
    pub orchestrator: String,
    /// The address the other nodes reach this one at, `ws://HOST:PORT`; this process serves
    /// gradient exchange on PORT.
    pub node_address: String,
}

impl Cluster {
    /// The collective's configuration for `devices` replicas on this node; checks the ranks
    /// and addresses.
    pub fn config(&self, devices: usize) -> Result<CollectiveConfig, ParallelError> {
        if self.node_rank >= self.nodes {
            return Err(ParallelError::NodeRank {
                rank: self.node_rank,
                nodes: self.nodes,
            });
        }
        let address = |what, value: &str| -> Result<Address, ParallelError> {
            let bad = || ParallelError::Address {
                what,
                value: value.to_string(),
            };
            if !value.starts_with("ws://") {
                return Err(bad());
            }
            value.parse().map_err(|_| bad())
        };
        let port = self
            .node_address
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
            .ok_or_else(|| ParallelError::Address {
                what: "--node-address",
                value: self.node_address.clone(),
            })?;
        Ok(CollectiveConfig::default()
            .with_num_devices(devices)
            .with_num_nodes(self.nodes as u32)
            .with_global_address(address("--orchestrator", &self.orchestrator)?)
            .with_node_address(address("--node-address", &self.node_address)?)
            .with_data_service_port(port))
    }
}

/// One replica's membership of the collective.
pub struct Peer {
    id: PeerId,
    /// Global rank: `node_rank * devices + local_rank`.
    pub rank: usize,
    /// Replicas in the whole run.
    pub world: usize,
}

impl Peer {
    /// Register replica `local_rank` of `devices` on this process (blocks until every replica
    /// of every node has registered).
    pub fn join<B: Backend>(
        local_rank: usize,
        devices: usize,
        cluster: Option<&Cluster>,
        device: &B::Device,
    ) -> Result<Self, ParallelError> {
        if devices == 0 {
            return Err(ParallelError::NoDevices);
        }
        let (config, node_rank, nodes) = match cluster {
            Some(c) => (c.config(devices)?, c.node_rank, c.nodes),
            None => (CollectiveConfig::default().with_num_devices(devices), 0, 1),
        };
        let rank = node_rank * devices + local_rank;
        let id = PeerId::from(rank);
        register::<B>(id, device.clone(), config)?;
        Ok(Peer {
            id,
            rank,
            world: nodes * devices,
        })
    }

    /// `Σ_r weight_r · values_r` over all replicas: weighted here, summed by one all-reduce,
    /// read back to the host.
    pub fn weighted_sum<B: Backend>(
        &self,
        values: &[f64],
        weight: f64,
        device: &B::Device,
    ) -> Result<Vec<f64>, ParallelError> {
        let host: Vec<f32> = values.iter().map(|&v| (v * weight) as f32).collect();
        let t = Tensor::<B, 1>::from_data(TensorData::new(host, [values.len()]), device);
        let reduced = self.sum_padded(t)?;
        hier_model::host::read_vec::<f64, B, 1, Float>(reduced)
            .map_err(|e| ParallelError::Read(e.to_string()))
    }

    /// [`Self::weighted_sum`] of a tensor, left on the device: no read.
    pub fn weighted_sum_device<B: Backend>(
        &self,
        values: Tensor<B, 1>,
        weight: f64,
    ) -> Result<Tensor<B, 1>, ParallelError> {
        self.sum_padded(values.mul_scalar(weight))
    }

    /// The all-reduced sum of `t`, padded for the collective and cut back to its length.
    fn sum_padded<B: Backend>(&self, t: Tensor<B, 1>) -> Result<Tensor<B, 1>, ParallelError> {
        let [len] = t.dims();
        // the ring all-reduce between nodes slices a tensor into one part per node
        let t = match len < self.world {
            true => Tensor::cat(
                vec![t.clone(), Tensor::zeros([self.world - len], &t.device())],
                0,
            ),
            false => t,
        };
        Ok(self
            .reduce::<B, 1>(t, ReduceOperation::Sum)?
            .narrow(0, 0, len))
    }

    /// The mean of `values` over all replicas.
    pub fn mean<B: Backend>(
        &self,
        values: &[f64],
        device: &B::Device,
    ) -> Result<Vec<f64>, ParallelError> {
        self.weighted_sum::<B>(values, 1.0 / self.world as f64, device)
    }

    /// Replace every gradient of `module` by its mean over all replicas.
    pub fn mean_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams, ParallelError> {
        self.weighted_gradients(module, grads, 1.0 / self.world as f64)
    }

    /// Replace every gradient of `module` by `Σ_r weight_r · grad_r` over all replicas (the
    /// weights add up to 1): one all-reduce of all gradients laid end to end in module order.
    pub fn weighted_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: &M,
        grads: GradientsParams,
        weight: f64,
    ) -> Result<GradientsParams, ParallelError> {
        if self.world == 1 {
            return Ok(grads); // one replica's weight is 1: no flattening, no collective
        }
        let mut flatten = Flatten::<B> {
            grads,
            parts: Vec::new(),
        };
        module.visit(&mut flatten);
        let Flatten { mut grads, parts } = flatten;
        if parts.is_empty() {
            return Ok(grads);
        }
        // weighted here, in every replica at once, and summed: the collective's Mean divides
        // after the sum, on its one server thread while all replicas wait
        let scaled = Tensor::cat(parts, 0).mul_scalar(weight);
        let mean = self.reduce(scaled, ReduceOperation::Sum)?;
        module.visit(&mut Unflatten::<B> {
            grads: &mut grads,
            flat: mean,
            offset: 0,
        });
        Ok(grads)
    }

    fn reduce<B: Backend, const D: usize>(
        &self,
        t: Tensor<B, D>,
        op: ReduceOperation,
    ) -> Result<Tensor<B, D>, ParallelError> {
        let reduced = all_reduce::<B>(self.id, t.into_primitive().tensor(), op)?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
    }

    /// Leave the collective (every replica, at the end of the run).
    pub fn finish<B: Backend>(&self) -> Result<(), ParallelError> {
        finish_collective::<B>(self.id)?;
        Ok(())
    }
}

/// Run `f` once per device, each on its own thread as a peer of the collective (on the
/// backend `C` that holds the gradients), and leave the collective afterwards. Results come in
/// device order.
///
/// Each replica runs inside a rayon pool of its own with its share of the CPU cores, so CPU
/// backends that parallelise an op with rayon (Flex's matrix products, softmax, reductions)
/// stay on that share: with one shared pool, two replicas on two cores each fanned their ops
/// out over both cores and oversubscribed them.
pub fn on_replicas<C, T, E, F>(
    devices: &[C::Device],
    cluster: Option<&Cluster>,
    f: F,
) -> Vec<Result<T, E>>
where
    C: Backend,
    T: Send,
    E: From<ParallelError> + Send,
    F: Fn(&Peer, &C::Device) -> Result<T, E> + Sync,
{
    on_threads(devices.len(), |r| {
        let device = &devices[r];
        let peer = Peer::join::<C>(r, devices.len(), cluster, device)?;
        let out = f(&peer, device);
        peer.finish::<C>()?;
        out
    })
}

/// Run `f(0) .. f(n - 1)` on `n` threads at once, each inside a rayon pool of its own with
/// `1/n` of the CPU cores (see [`on_replicas`]). Results come in order.
pub fn on_threads<T, F>(n: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> T + Sync,
{
    let threads = (cpu_cores() / n.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|r| {
                let f = &f;
                s.spawn(move || {
                    match rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .thread_name(move |i| format!("replica-{r}-{i}"))
                        .build()
                    {
                        Ok(pool) => pool.install(|| f(r)),
                        // no own pool (thread limits): the shared one is slower, not wrong
                        Err(_) => f(r),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The CPU cores this process may use.
pub fn cpu_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Replicas for a CPU run that shares batches of `batch` rows ([`BatchSplit::Shared`]): one per
/// core, at most one per row. Flex runs element-wise ops on one thread, so replicas on threads
/// use the cores better than one replica whose matrix products alone are parallel.
pub fn cpu_replicas(batch: usize) -> usize {
    cpu_cores().min(batch).max(1)
}

/// Every gradient as a 1-D tensor, in module order; zeros for a parameter without one here, which
/// may have one on another replica.
struct Flatten<B: AutodiffBackend> {
    grads: GradientsParams,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let g = self
            .grads
            .remove::<B::InnerBackend, D>(param.id)
            .unwrap_or_else(|| {
                let p = param.val().inner();
                Tensor::zeros(p.shape(), &p.device())
            });
        let numel = g.shape().num_elements();
        self.parts.push(g.reshape([numel]));
    }
}

/// The inverse of [`Flatten`]: cut `flat` back into the parameters' gradients.
struct Unflatten<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    flat: Tensor<B::InnerBackend, 1>,
    offset: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let dims: [usize; D] = param.val().dims();
        let numel = dims.iter().product::<usize>();
        let g = self
            .flat
            .clone()
            .narrow(0, self.offset, numel)
            .reshape(dims);
        self.offset += numel;
        self.grads.register(param.id, g);
    }
}
