#include "trainer/train/pipeline.h"

#include <torch/torch.h>

namespace anneal::train {
namespace {

model::ForwardInputs InputsOf(const Batch& b) {
  return {.input_ids = b.input_ids, .attention_mask = b.attention_mask, .position_ids = b.position_ids,
          .segment_ids = b.segment_ids};
}

// One stage's view of the pipeline: which neighbours exist and how to talk to them.
class Stage {
 public:
  Stage(model::CausalLM& lm, const StageContext& ctx, int64_t micro_batches = 0)
      : lm_(lm), ctx_(ctx), micro_batches_(micro_batches) {
    const bool multi = ctx.pp != nullptr && ctx.pp->size() > 1;
    rank_ = multi ? ctx.pp->rank() : 0;
    size_ = multi ? ctx.pp->size() : 1;
  }
  bool first() const { return rank_ == 0; }
  bool last() const { return rank_ == size_ - 1; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Counts backwards; before the step's last one, runs the context's hook.
  void BeforeBackward() {
    if (++backwards_ == micro_batches_ && ctx_.before_last_backward) ctx_.before_last_backward();
  }

  // [B, T, C] for a micro-batch, in the activations' dtype.
  torch::Tensor Empty(const Batch& b) const {
    return torch::empty({b.input_ids.size(0), b.input_ids.size(1) / ctx_.sequence_shards, lm_->config().hidden_size},
                        torch::TensorOptions().dtype(ctx_.dtype).device(ctx_.device));
  }

  // This stage's layers on one micro-batch. `input` is the received activation (undefined on the first stage,
  // which embeds). Returns the activation to send, or on the last stage the summed token losses and their count.
  torch::Tensor RunLayers(const Batch& b, const torch::Tensor& input, int64_t* label_tokens = nullptr) {
    torch::Tensor x = first() ? lm_->Embed(b.input_ids) : input;
    const auto& st = lm_->stage();
    x = lm_->RunLayers(x, InputsOf(b), st.layer_begin, st.layer_end);
    if (!last()) return x;
    auto [sum, count] = lm_->LossSum(lm_->FinalNorm(x), model::ShiftLabels(b.labels));
    if (label_tokens != nullptr) *label_tokens += count;
    return sum;
  }

  // Training forward: the loss (summed token losses / denom) on the last stage, added to *loss_sum; elsewhere
  // the activation to send.
  torch::Tensor Forward(const Batch& b, const torch::Tensor& input, double denom, double* loss_sum) {
    torch::Tensor out = RunLayers(b, input);
    if (!last()) return out;
    torch::Tensor loss = out / denom;
    // Mixture-of-experts: + router_aux_loss_coef * the load-balancing loss of this micro-batch, as HF adds it.
    if (lm_->HasSparseLayers()) loss = loss + lm_->TakeAuxLoss(b.attention_mask).to(loss.device());
    *loss_sum += loss.item<double>();
    return loss;
  }

  // Posts what is given (forward activation to the next stage, input gradient to the previous) and receives
  // what is asked, pairing the operations with one neighbour.
  void SendNext(const torch::Tensor& t) { if (!last()) ctx_.pp->Send(t, rank_ + 1); }
  void SendPrev(const torch::Tensor& t) { if (!first()) ctx_.pp->Send(t, rank_ - 1); }
  torch::Tensor RecvPrev(const Batch& b) {
    if (first()) return {};
    torch::Tensor t = Empty(b);
    ctx_.pp->Recv(t, rank_ - 1);
    return t;
  }
  torch::Tensor RecvNext(const Batch& b) {
    if (last()) return {};
    torch::Tensor t = Empty(b);
    ctx_.pp->Recv(t, rank_ + 1);
    return t;
  }
  // Send the activation forward while receiving the gradient of an earlier one from the next stage.
  torch::Tensor SendNextRecvNext(const torch::Tensor& act, const Batch& grad_of) {
    if (last()) return {};
    torch::Tensor g = Empty(grad_of);
    ctx_.pp->SendRecv(&act, rank_ + 1, &g, rank_ + 1);
    return g;
  }
  // Send an input gradient back while receiving the next activation from the previous stage.
  torch::Tensor SendPrevRecvPrev(const torch::Tensor& grad, const Batch& act_of) {
    if (first()) return {};
    torch::Tensor a = Empty(act_of);
    ctx_.pp->SendRecv(&grad, rank_ - 1, &a, rank_ - 1);
    return a;
  }

 private:
  model::CausalLM& lm_;
  const StageContext& ctx_;
  int64_t micro_batches_ = 0, backwards_ = 0;
  int rank_ = 0, size_ = 1;
};

// A micro-batch in flight: its stage input (a leaf that collects the input gradient) and output.
struct InFlight {
  torch::Tensor input, output;
};

InFlight RunForward(Stage& stage, const Batch& b, torch::Tensor received, double denom, double* loss_sum) {
  InFlight f;
  if (received.defined()) f.input = received.requires_grad_(true);
  f.output = stage.Forward(b, f.input, denom, loss_sum);
  return f;
}

// Backward of one micro-batch: from the loss on the last stage, else from the gradient received for the
// output. Returns the gradient of the stage input to send back (zeros when nothing upstream needs it).
torch::Tensor RunBackward(Stage& stage, InFlight& f, const torch::Tensor& output_grad) {
  stage.BeforeBackward();
  if (stage.last()) {
    f.output.backward();
  } else if (f.output.requires_grad()) {
    torch::autograd::backward({f.output}, {output_grad});
  }
  torch::Tensor g;
  if (!stage.first()) g = f.input.grad().defined() ? f.input.grad() : torch::zeros_like(f.input);
  f = InFlight{};  // free the activations
  return g;
}

}  // namespace

double TrainMicroBatches(model::CausalLM& lm, const std::vector<Batch>& micro, double denom,
                         const StageContext& ctx) {
  const int64_t m_count = static_cast<int64_t>(micro.size());
  Stage stage(lm, ctx, m_count);
  double loss_sum = 0;
  std::vector<InFlight> flight(micro.size());
  if (ctx.schedule == PipelineSchedule::kGPipe || stage.size() == 1) {
    // All forwards, then all backwards (with one stage: forward and backward of each micro-batch in turn).
    if (stage.size() == 1) {
      for (int64_t m = 0; m < m_count; ++m) {
        flight[m] = RunForward(stage, micro[m], {}, denom, &loss_sum);
        RunBackward(stage, flight[m], {});
      }
      return loss_sum;
    }
    for (int64_t m = 0; m < m_count; ++m) {
      flight[m] = RunForward(stage, micro[m], stage.RecvPrev(micro[m]), denom, &loss_sum);
      if (!stage.last()) stage.SendNext(flight[m].output.detach());
    }
    for (int64_t m = 0; m < m_count; ++m) {
      torch::Tensor g = RunBackward(stage, flight[m], stage.RecvNext(micro[m]));
      stage.SendPrev(g);
    }
    return loss_sum;
  }

  // 1F1B (Megatron-LM's schedule without interleaving).
  const int64_t warmup = std::min<int64_t>(stage.size() - stage.rank() - 1, m_count);
  const int64_t steady = m_count - warmup;
  for (int64_t m = 0; m < warmup; ++m) {
    flight[m] = RunForward(stage, micro[m], stage.RecvPrev(micro[m]), denom, &loss_sum);
    if (!stage.last()) stage.SendNext(flight[m].output.detach());
  }
  torch::Tensor received = steady > 0 ? stage.RecvPrev(micro[warmup]) : torch::Tensor();
  for (int64_t i = 0; i < steady; ++i) {
    const int64_t fwd = warmup + i, bwd = i;
    flight[fwd] = RunForward(stage, micro[fwd], received, denom, &loss_sum);
    torch::Tensor out_grad = stage.last() ? torch::Tensor()
                                          : stage.SendNextRecvNext(flight[fwd].output.detach(), micro[bwd]);
    torch::Tensor in_grad = RunBackward(stage, flight[bwd], out_grad);
    if (i == steady - 1) {
      stage.SendPrev(in_grad);
    } else {
      received = stage.first() ? torch::Tensor() : stage.SendPrevRecvPrev(in_grad, micro[fwd + 1]);
    }
  }
  for (int64_t i = 0; i < warmup; ++i) {
    const int64_t bwd = steady + i;
    torch::Tensor in_grad = RunBackward(stage, flight[bwd], stage.RecvNext(micro[bwd]));
    stage.SendPrev(in_grad);
  }
  return loss_sum;
}

std::pair<double, int64_t> EvalMicroBatches(model::CausalLM& lm, const std::vector<Batch>& micro,
                                            const StageContext& ctx) {
  torch::NoGradGuard no_grad;
  Stage stage(lm, ctx);
  double sum = 0;
  int64_t count = 0;
  for (const Batch& b : micro) {
    torch::Tensor out = stage.RunLayers(b, stage.RecvPrev(b), &count);
    if (stage.last()) {
      sum += out.item<double>();
    } else {
      stage.SendNext(out);
    }
  }
  return {sum, count};
}

}  // namespace anneal::train
