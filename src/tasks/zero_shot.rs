//! `zero-shot-classification`, as transformers' ZeroShotClassificationPipeline (4.57) computes
//! it over an NLI model: one (sequence, hypothesis) pair per candidate label, the hypothesis
//! being `hypothesis_template` with the label in it, truncating only the sequence; the score of
//! a label is the softmax of the entailment logits over the labels, or, with `multi_label` (or
//! a single label), each label's softmax over its (contradiction, entailment) logits. numpy's
//! float32 `exp(x) / exp(x).sum()` as the pipeline writes it (no max subtracted).

use serde::{Deserialize, Serialize};

use super::{TaskError, numpy_f32};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroShotParams {
    /// A list, or one string of comma-separated labels (each trimmed, empty ones dropped).
    pub candidate_labels: CandidateLabels,
    #[serde(default = "default_template")]
    pub hypothesis_template: String,
    #[serde(default)]
    pub multi_label: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CandidateLabels {
    List(Vec<String>),
    CommaSeparated(String),
}

fn default_template() -> String {
    "This example is {}.".into()
}

/// A zero-shot answer as the pipeline gives it: labels best first, with their scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZeroShotOutput {
    pub sequence: String,
    pub labels: Vec<String>,
    pub scores: Vec<f32>,
}

impl ZeroShotParams {
    /// The labels to score, checked: at least one.
    pub fn labels(&self) -> Result<Vec<String>, TaskError> {
        let labels = match &self.candidate_labels {
            CandidateLabels::List(labels) => labels.clone(),
            CandidateLabels::CommaSeparated(text) => text
                .split(',')
                .map(str::trim)
                .filter(|label| !label.is_empty())
                .map(String::from)
                .collect(),
        };
        if labels.is_empty() {
            return Err(TaskError::Invalid("`candidate_labels` is empty".into()));
        }
        Ok(labels)
    }

    /// Each label's hypothesis.
    pub fn hypotheses(&self, labels: &[String]) -> Result<Vec<String>, TaskError> {
        labels.iter().map(|label| format_template(&self.hypothesis_template, label)).collect()
    }
}

/// Python's `template.format(label)` for the forms a hypothesis template uses: `{}` once or
/// `{0}` any number of times, `{{` and `}}` for braces. A template without a place for the
/// label is refused, as the pipeline refuses it.
pub fn format_template(template: &str, label: &str) -> Result<String, TaskError> {
    let bad = |why: &str| {
        TaskError::Invalid(format!(
            "`hypothesis_template` {template:?} {why}: write {{}} where the label goes"
        ))
    };
    let mut out = String::with_capacity(template.len() + label.len());
    let (mut places, mut chars) = (0, template.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('{', Some('{')) | ('}', Some('}')) => {
                out.push(c);
                chars.next();
            }
            ('{', _) => {
                let field: String = chars.by_ref().take_while(|&c| c != '}').collect();
                if field.is_empty() && places > 0 {
                    return Err(bad("has more than one {}"));
                }
                if !(field.is_empty() || field == "0") {
                    return Err(bad(&format!("has a field {{{field}}} other than {{}}")));
                }
                places += 1;
                out.push_str(label);
            }
            ('}', _) => return Err(bad("has a single }")),
            _ => out.push(c),
        }
    }
    if places == 0 {
        return Err(bad("has no place for the label"));
    }
    Ok(out)
}

/// The entailment label's id: the first label whose name starts with "entail", ignoring case.
pub fn entailment_id(labels: &[String]) -> Option<usize> {
    labels.iter().position(|label| label.to_lowercase().starts_with("entail"))
}

/// The answer from each candidate's logits (one row per label, in label order).
pub fn finish(
    sequence: &str,
    labels: &[String],
    logits: &[&[f32]],
    entailment: usize,
    multi_label: bool,
) -> ZeroShotOutput {
    let scores: Vec<f32> = if multi_label || labels.len() == 1 {
        let contradiction = if entailment == 0 { logits[0].len() - 1 } else { 0 };
        logits
            .iter()
            .map(|row| {
                let (c, e) = (numpy_f32::exp(row[contradiction]), numpy_f32::exp(row[entailment]));
                e / (c + e)
            })
            .collect()
    } else {
        let exps: Vec<f32> = logits.iter().map(|row| numpy_f32::exp(row[entailment])).collect();
        let total = numpy_f32::sum(&exps);
        exps.iter().map(|e| e / total).collect()
    };
    // `reversed(scores.argsort())`: best first, and of equal scores the later label first.
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(b.cmp(&a)));
    ZeroShotOutput {
        sequence: sequence.to_string(),
        labels: order.iter().map(|&i| labels[i].clone()).collect(),
        scores: order.iter().map(|&i| scores[i]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: &str) -> ZeroShotParams {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn comma_separated_labels_are_trimmed_and_empty_ones_dropped() {
        let p = params(r#"{"candidate_labels": "esporte, política,,economia "}"#);
        assert_eq!(p.labels().unwrap(), ["esporte", "política", "economia"]);
        let empty = params(r#"{"candidate_labels": []}"#).labels().unwrap_err();
        assert_eq!(empty, TaskError::Invalid("`candidate_labels` is empty".into()));
        assert!(params(r#"{"candidate_labels": " , "}"#).labels().is_err());
    }

    #[test]
    fn templates_format_as_python_does() {
        assert_eq!(
            format_template("Este exemplo é sobre {}.", "política").unwrap(),
            "Este exemplo é sobre política."
        );
        assert_eq!(format_template("{0}: {0}", "a").unwrap(), "a: a");
        assert_eq!(format_template("{{x}} {}", "a").unwrap(), "{x} a");
        for bad in ["No place.", "{} and {}", "{label}", "a } b"] {
            let error = format_template(bad, "a").unwrap_err().to_string();
            assert!(error.starts_with("`hypothesis_template`"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_entailment_label_is_found_by_its_name() {
        let labels = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(entailment_id(&labels(&["CONTRADICTION", "NEUTRAL", "ENTAILMENT"])), Some(2));
        assert_eq!(entailment_id(&labels(&["contradiction", "entailment", "neutral"])), Some(1));
        assert_eq!(entailment_id(&labels(&["negativo", "positivo"])), None);
    }

    #[test]
    fn single_label_mode_softmaxes_over_labels_and_multi_label_per_label() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let rows: [&[f32]; 2] = [&[0.0, 1.0, 0.0], &[0.0, 3.0, 0.0]];
        let single = finish("s", &names, &rows, 1, false);
        assert_eq!(single.labels, ["b", "a"]);
        assert!((single.scores[0] - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
        let multi = finish("s", &names, &rows, 1, true);
        assert!((multi.scores[1] - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
    }
}
