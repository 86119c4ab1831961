//! The operator's errors: a failed Kubernetes call (naming what was being done), and the
//! finalizer helper's wrapper around it.

use kube::runtime::finalizer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed; `action` says what the operator was doing.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// The CognitionTenant has no namespace (the CRD is namespaced, so the API never sends one).
    #[error("CognitionTenant {0:?} has no namespace; the resource is namespaced")]
    NoNamespace(String),
    /// Adding/removing the finalizer, or the apply/cleanup it wraps, failed.
    #[error(transparent)]
    Finalizer(Box<finalizer::Error<Error>>),
}

impl Error {
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}
