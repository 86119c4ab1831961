//! The tenant's copy of its LLM API key: Secret `llm-credentials` in the tenant namespace,
//! key `api-key`, copied from the Secret the spec references in the CognitionTenant's own
//! namespace (the server pod can only read Secrets of its namespace).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::meta;
use crate::tenant::Tenant;

/// The copied Secret's name.
pub const LLM_SECRET: &str = "llm-credentials";
/// The key holding the API key in [`LLM_SECRET`], whatever the source key was called.
pub const LLM_SECRET_KEY: &str = "api-key";

/// `llm-credentials` holding `api_key`.
pub fn llm_secret(tenant: &Tenant, api_key: &ByteString) -> Secret {
    Secret {
        metadata: meta(tenant, LLM_SECRET),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            LLM_SECRET_KEY.to_owned(),
            api_key.clone(),
        )])),
        ..Secret::default()
    }
}
