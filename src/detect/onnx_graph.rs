//! The one reader of decoded ONNX graphs, shared by the native forward passes (Uni-AD in
//! `uniad/native/`, the regression LSTM in `regress/lstm.rs`): lookups by name (nodes
//! by the values they produce or read, constants whether initializers or `Constant`
//! nodes), shape-checked weights, and one error type that names what is missing or
//! wrong. Each model's code adds its own architecture readers on top.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tract_onnx::pb;

use super::onnx_proto::{self, TensorError};

/// Why a graph cannot run natively.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// The file could not be read or decoded as an ONNX model.
    #[error("cannot read {path}: {message}")]
    Read {
        /// File.
        path: PathBuf,
        /// Decoder error.
        message: String,
    },
    /// The graph is not one of the supported shapes.
    #[error("unsupported graph: {0}")]
    Graph(String),
    /// A tensor the architecture needs is not in the graph.
    #[error("tensor {name} is missing")]
    Missing {
        /// The tensor (initializer name, or the layer and role).
        name: String,
    },
    /// A tensor has another shape than the architecture needs.
    #[error("tensor {name} has shape {got:?}, expected {expected:?}")]
    Shape {
        /// The initializer.
        name: String,
        /// Its shape in the file.
        got: Vec<i64>,
        /// The shape the architecture needs.
        expected: Vec<usize>,
    },
    /// A constant tensor has the wrong type, shape or storage.
    #[error("tensor {name:?}: {detail}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A node has an attribute (or attribute value) the native code does not implement.
    #[error("node {node:?} ({op}): unsupported attribute {attribute}: {detail}")]
    Attribute {
        /// Node name.
        node: String,
        /// Operator.
        op: String,
        /// Attribute name.
        attribute: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A weight input is not a constant (initializer or `Constant` node).
    #[error("node {node:?} ({op}): input {input} ({name:?}) is not an initializer or constant")]
    MissingInitializer {
        /// Node name.
        node: String,
        /// Operator.
        op: String,
        /// Which input (`W`, `R`, `B`, ...).
        input: &'static str,
        /// The tensor name the node refers to.
        name: String,
    },
    /// The native result differs from tract's on the load-time probe.
    #[error("native and tract results differ on the probe ({what}): max |diff| {diff:e}")]
    Mismatch {
        /// Which probe.
        what: String,
        /// Largest absolute difference.
        diff: f32,
    },
}

impl From<TensorError> for GraphError {
    fn from(e: TensorError) -> Self {
        GraphError::Tensor {
            name: e.name,
            detail: e.detail,
        }
    }
}

/// A [`GraphError::Graph`].
pub(crate) fn graph_err(msg: impl Into<String>) -> GraphError {
    GraphError::Graph(msg.into())
}

/// Decodes an ONNX file into its protobuf model (the same decoder tract uses).
pub fn read_proto(path: &Path) -> Result<pb::ModelProto, GraphError> {
    onnx_proto::read_proto(path).map_err(|message| GraphError::Read {
        path: path.to_path_buf(),
        message,
    })
}

/// Name → producer and name → constant lookups over one graph.
pub(crate) struct Graph<'a> {
    graph: &'a pb::GraphProto,
    producer: HashMap<&'a str, (&'a pb::NodeProto, usize)>,
    constants: HashMap<&'a str, &'a pb::TensorProto>,
}

impl<'a> Graph<'a> {
    /// Indexes `graph`.
    pub(crate) fn new(graph: &'a pb::GraphProto) -> Graph<'a> {
        let mut producer = HashMap::new();
        for node in &graph.node {
            for (i, out) in node.output.iter().enumerate() {
                if !out.is_empty() {
                    producer.insert(out.as_str(), (node, i));
                }
            }
        }
        Graph {
            graph,
            producer,
            constants: onnx_proto::constants(graph),
        }
    }

    /// The graph of `model`, every node in the default ONNX domain.
    pub(crate) fn of_model(model: &'a pb::ModelProto) -> Result<Graph<'a>, GraphError> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| graph_err("the model has no graph"))?;
        if let Some(node) = graph
            .node
            .iter()
            .find(|n| !(n.domain.is_empty() || n.domain == "ai.onnx"))
        {
            return Err(graph_err(format!(
                "node {:?} is in domain {:?}",
                node.name, node.domain
            )));
        }
        Ok(Graph::new(graph))
    }

    /// Every node, in file order.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = &'a pb::NodeProto> {
        self.graph.node.iter()
    }

    /// The graph's real inputs (initializers listed as inputs by old exporters left out).
    pub(crate) fn inputs(&self) -> Vec<&'a pb::ValueInfoProto> {
        let initializers: Vec<&str> = self
            .graph
            .initializer
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        self.graph
            .input
            .iter()
            .filter(|i| !initializers.contains(&i.name.as_str()))
            .collect()
    }

    /// The single output's name.
    pub(crate) fn single_output(&self) -> Result<&'a str, GraphError> {
        match self.graph.output.as_slice() {
            [o] => Ok(o.name.as_str()),
            outs => Err(graph_err(format!(
                "expected 1 graph output, found {}",
                outs.len()
            ))),
        }
    }

    /// The node producing `name` and which of its outputs it is.
    pub(crate) fn producer(&self, name: &str) -> Option<(&'a pb::NodeProto, usize)> {
        self.producer.get(name).copied()
    }

    /// The node of type `op` that reads `value`.
    pub(crate) fn consumer(&self, value: &str, op: &str) -> Option<&'a pb::NodeProto> {
        self.nodes()
            .find(|n| n.op_type == op && n.input.iter().any(|i| i == value))
    }

    /// The node producing `name`, which must be output 0 of an `op` node.
    pub(crate) fn expect_op(&self, name: &str, op: &str) -> Result<&'a pb::NodeProto, GraphError> {
        match self.producer(name) {
            Some((node, 0)) if node.op_type == op => Ok(node),
            Some((node, i)) => Err(graph_err(format!(
                "{name:?} is output {i} of {} node {:?}, expected {op}",
                node.op_type, node.name
            ))),
            None => Err(graph_err(format!(
                "{name:?} is not produced by a node, expected {op}"
            ))),
        }
    }

    /// A constant tensor: an initializer or the `value` of a `Constant` node.
    pub(crate) fn constant(&self, name: &str) -> Option<&'a pb::TensorProto> {
        self.constants.get(name).copied()
    }

    /// The integers of a constant tensor (a scalar gives one).
    pub(crate) fn constant_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.constant(name).and_then(|t| onnx_proto::ints(t).ok())
    }

    /// The constant `name`, or [`GraphError::Missing`].
    pub(crate) fn tensor(&self, name: &str) -> Result<&'a pb::TensorProto, GraphError> {
        self.constant(name)
            .ok_or_else(|| GraphError::Missing { name: name.into() })
    }

    /// The f32 values of constant `name`, which must have exactly `shape`.
    pub(crate) fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, GraphError> {
        let t = self.tensor(name)?;
        if t.dims.len() != shape.len() || t.dims.iter().zip(shape).any(|(&g, &e)| g != e as i64) {
            return Err(GraphError::Shape {
                name: name.into(),
                got: t.dims.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(onnx_proto::floats(t)?)
    }

    /// A float constant of one element (any rank).
    pub(crate) fn scalar(&self, name: &str) -> Result<f32, GraphError> {
        let t = self.tensor(name)?;
        if t.dims.iter().any(|&d| d != 1) {
            return Err(GraphError::Shape {
                name: name.into(),
                got: t.dims.clone(),
                expected: vec![],
            });
        }
        Ok(onnx_proto::floats(t)?[0])
    }

    /// The single value of a one-element integer (int64 or int32) constant.
    pub(crate) fn int(&self, name: &str) -> Result<i64, GraphError> {
        let t = self.tensor(name)?;
        if t.dims.iter().any(|&d| d != 1) {
            return Err(GraphError::Shape {
                name: name.into(),
                got: t.dims.clone(),
                expected: vec![1],
            });
        }
        match onnx_proto::ints(t)?.as_slice() {
            [v] => Ok(*v),
            _ => Err(GraphError::Tensor {
                name: name.into(),
                detail: "holds no single integer".into(),
            }),
        }
    }
}

/// Attribute `name` of `node`.
pub(crate) fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// The integer attribute `name` of `node`, or `default`.
pub(crate) fn attr_int(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

/// Input `i` of a node, `None` when absent or empty (an omitted optional input).
pub(crate) fn input(node: &pb::NodeProto, i: usize) -> Option<&str> {
    node.input
        .get(i)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}
