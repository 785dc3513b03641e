//! The engine's batcher driving a real encoder on its model thread: rows sent concurrently
//! through it give what the model gives them directly (within the batch-vs-alone bound).

use crate::common;

use std::time::Duration;

use lote::{
    device::Placement,
    engine::{
        batcher::Batcher,
        policy::{Lane, Policy},
    },
    settings::{Dtype, Task},
    tasks::pipeline::{BatchBudget, EncoderPipeline, Extract, RowRequest},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_through_the_batcher_equal_direct_rows() {
    let dir = common::fixture_model("bert-cls");
    let placement = Placement { device: tch::Device::Cpu, dtype: Dtype::Fp32 };
    let budget = BatchBudget { max_batch_size: 8, max_batch_tokens: 4096 };
    let load =
        || EncoderPipeline::load(&dir, Task::TextClassification, &placement, budget).unwrap();
    let direct = load().take_model().unwrap();
    let reference = common::read_reference(&dir);
    let requests: Vec<RowRequest> = reference["encodings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
            let type_ids: Vec<u32> =
                serde_json::from_value(case["token_type_ids"].clone()).unwrap();
            RowRequest { ids, type_ids, extract: Extract::Sequence }
        })
        .collect();
    let alone: Vec<Vec<f32>> = requests
        .iter()
        .map(|r| direct.forward_rows(std::slice::from_ref(r)).remove(0).unwrap().values().to_vec())
        .collect();

    let policy = Policy {
        max_batch_tokens: 4096,
        max_batch_size: 8,
        max_batch_delay: Duration::from_millis(5),
        max_queued: 64,
        bulk_share: 0.2,
    };
    let batcher = Batcher::start("bert-cls", load().take_model().unwrap(), policy);
    let calls: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let batcher = batcher.clone();
            let tokens = request.ids.len();
            tokio::spawn(async move { batcher.infer(request, tokens, Lane::Bulk, None).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let output = call.await.unwrap().unwrap().output;
        let diff =
            output.values().iter().zip(&alone[i]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-5, "row {i}: max |diff| {diff}");
    }
}
