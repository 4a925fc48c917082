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
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{
    all_reduce, finish_collective, register, CollectiveConfig, CollectiveError, PeerId,
    ReduceOperation,
};
use burn_communication::Address;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ParallelError {
    #[error("{what} `{value}` is not a WebSocket address; write it as ws://HOST:PORT")]
    Address { what: &'static str, value: String },
    #[error("--node-rank {rank} is outside 0..{nodes} (--nodes {nodes})")]
    NodeRank { rank: usize, nodes: usize },
    #[error("--devices must be at least 1")]
    NoDevices,
    #[error("collective communication failed: {0:?}; check that every node runs with the same --nodes/--devices and reaches the orchestrator")]
    Collective(CollectiveError),
    #[error("another replica failed (rank 0 reports why); this replica stopped with it")]
    PeerFailed,
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

    /// The mean of `values` over all replicas.
    pub fn mean<B: Backend>(
        &self,
        values: &[f64],
        device: &B::Device,
    ) -> Result<Vec<f64>, ParallelError> {
        // the ring all-reduce between nodes slices a tensor into one part per node
        let mut host: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        host.resize(values.len().max(self.world), 0.0);
        let len = host.len();
        let t = Tensor::<B, 1>::from_data(TensorData::new(host, [len]), device);
        let reduced = self.reduce::<B, 1>(t, ReduceOperation::Mean)?;
        Ok(reduced
            .into_data()
            .iter::<f64>()
            .take(values.len())
            .collect())
    }

    /// Replace every gradient of `module` by its mean over all replicas: one all-reduce of all
    /// gradients laid end to end in module order.
    pub fn mean_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams, ParallelError> {
        if self.world == 1 {
            return Ok(grads); // the mean over one replica: no flattening, no collective
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
        // scaled by 1/world here, in every replica at once, and summed: the collective's Mean
        // divides after the sum, on its one server thread while all replicas wait
        let scaled = Tensor::cat(parts, 0).mul_scalar(1.0 / self.world as f64);
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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / devices.len().max(1)).max(1);
    std::thread::scope(|s| {
        let replicas: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(r, device)| {
                let f = &f;
                s.spawn(move || {
                    let replica = || {
                        let peer = Peer::join::<C>(r, devices.len(), cluster, device)?;
                        let out = f(&peer, device);
                        peer.finish::<C>()?;
                        out
                    };
                    match rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .thread_name(move |i| format!("replica-{r}-{i}"))
                        .build()
                    {
                        Ok(pool) => pool.install(replica),
                        // no own pool (thread limits): the shared one is slower, not wrong
                        Err(_) => replica(),
                    }
                })
            })
            .collect();
        replicas
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
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
