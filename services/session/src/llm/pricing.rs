//! Estimated cost of a model call from a small price table (USD per million input / output
//! tokens, list prices of common OpenAI and Anthropic models). A model matches the longest
//! table entry its name starts with (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`). The `mock`
//! and `openai_compatible` providers and unknown models cost 0: an estimate, not a bill
//! (cached-input discounts and batch prices are ignored).

use super::{ModelId, Usage};

/// `(model prefix, USD per 1M input tokens, USD per 1M output tokens)`.
const OPENAI: &[(&str, f64, f64)] = &[
    ("gpt-5", 1.25, 10.0),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5-nano", 0.05, 0.40),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4o", 2.50, 10.0),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4-turbo", 10.0, 30.0),
    ("gpt-4", 30.0, 60.0),
    ("gpt-3.5-turbo", 0.50, 1.50),
    ("o1", 15.0, 60.0),
    ("o1-mini", 1.10, 4.40),
    ("o1-pro", 150.0, 600.0),
    ("o3", 2.0, 8.0),
    ("o3-mini", 1.10, 4.40),
    ("o3-pro", 20.0, 80.0),
    ("o4-mini", 1.10, 4.40),
];

const ANTHROPIC: &[(&str, f64, f64)] = &[
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-3-5-haiku", 0.80, 4.0),
    ("claude-3-opus", 15.0, 75.0),
    ("claude-3-sonnet", 3.0, 15.0),
    ("claude-3-haiku", 0.25, 1.25),
];

/// USD per million `(input, output)` tokens of `model`, when the table knows it.
pub fn price(model: &ModelId) -> Option<(f64, f64)> {
    let table = match model.provider.as_str() {
        "openai" => OPENAI,
        "anthropic" => ANTHROPIC,
        _ => return None,
    };
    table
        .iter()
        .filter(|(prefix, _, _)| model.model.starts_with(prefix))
        .max_by_key(|(prefix, _, _)| prefix.len())
        .map(|&(_, input, output)| (input, output))
}

/// The estimated cost in USD of `usage` on `model` (0 when the price is unknown).
pub fn estimate_cost(model: &ModelId, usage: Usage) -> f64 {
    match price(model) {
        Some((input, output)) => {
            (usage.input_tokens as f64 * input + usage.output_tokens as f64 * output) / 1_000_000.0
        }
        None => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(provider: &str, model: &str) -> ModelId {
        ModelId {
            provider: provider.into(),
            model: model.into(),
        }
    }

    const USAGE: Usage = Usage {
        input_tokens: 1_000_000,
        output_tokens: 1_000_000,
    };

    #[test]
    fn known_models_cost_something_by_longest_prefix() {
        assert_eq!(estimate_cost(&id("openai", "gpt-4o"), USAGE), 12.5);
        assert_eq!(
            estimate_cost(&id("openai", "gpt-4o-mini-2024-07-18"), USAGE),
            0.75
        );
        assert_eq!(estimate_cost(&id("openai", "o3-mini"), USAGE), 5.5);
        assert_eq!(
            estimate_cost(&id("anthropic", "claude-sonnet-4-5-20250929"), USAGE),
            18.0
        );
        assert_eq!(
            estimate_cost(&id("anthropic", "claude-3-5-haiku-latest"), USAGE),
            4.8
        );
        let small = Usage {
            input_tokens: 1000,
            output_tokens: 500,
        };
        let cost = estimate_cost(&id("anthropic", "claude-opus-4-1"), small);
        assert!((cost - (0.015 + 0.0375)).abs() < 1e-12, "{cost}");
    }

    #[test]
    fn unknown_models_and_other_providers_cost_nothing() {
        assert_eq!(estimate_cost(&id("openai", "my-finetune"), USAGE), 0.0);
        assert_eq!(estimate_cost(&id("mock", "mock-echo"), USAGE), 0.0);
        assert_eq!(
            estimate_cost(&id("openai_compatible", "gpt-4o"), USAGE),
            0.0
        );
        assert_eq!(estimate_cost(&id("anthropic", "gpt-4o"), USAGE), 0.0);
    }
}
