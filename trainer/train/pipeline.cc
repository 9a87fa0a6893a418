#include "trainer/train/pipeline.h"

#include <torch/torch.h>

#include <deque>

namespace anneal::train {
namespace {

// Qwen3-MoE's load-balancing loss over several stages. HF's load_balancing_loss_func over a micro-batch's router
// logits of every layer is coef * E * sum_e (F_e / R) * (P_e / R): F_e the (unmasked) top-k picks of expert e, P_e
// its summed probabilities, R the rows, all summed over the layers. Each stage computes its layers' parts (F^s, P^s,
// R^s); the cumulative parts travel forward with the activation (fp32 [2E + 1], the bytes appended to the message),
// so the last stage adds the loss's value; the totals (F, R) travel back with the gradient ([E + 1]) and every other
// stage backpropagates coef * E * sum_e F_e P^s_e / R^2, the loss's gradient in P^s (F and R carry none).
struct RouterParts {
  torch::Tensor picks;  // [E] fp32, no graph
  torch::Tensor probs;  // [E] fp32, with graph
  torch::Tensor rows;   // [1] fp32
};

// t [..] and fp32 `extra` [n] -> one flat message in t's dtype (extra's bytes reinterpreted); t when undefined.
torch::Tensor Pack(const torch::Tensor& t, const torch::Tensor& extra) {
  if (!extra.defined()) return t;
  return torch::cat({t.reshape(-1), extra.to(torch::kFloat32).contiguous().view(t.scalar_type()).reshape(-1)});
}
// Elements of `dtype` that n fp32 values occupy in a message.
int64_t PackedLength(int64_t n, torch::ScalarType dtype) {
  return n * 4 / static_cast<int64_t>(c10::elementSize(dtype));
}

// A micro-batch in flight: its stage input (a leaf that collects the input gradient) and output; with the
// load-balancing loss over stages, this stage's summed router probabilities (P^s, with graph; not on the last stage)
// and, on the last stage, the totals [F, R] to send back.
struct InFlight {
  torch::Tensor input, output;
  torch::Tensor aux_probs, aux_totals;
};

model::ForwardInputs InputsOf(const Batch& b) {
  return {.input_ids = b.input_ids,
          .attention_mask = b.attention_mask,
          .position_ids = b.position_ids,
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
    const model::MoeConfig& moe = lm->config().moe;
    if (micro_batches > 0 && size_ > 1 && !ctx.last_stage_loss && lm->HasSparseLayers() && !moe.deepseek_moe &&
        moe.router_aux_loss_coef != 0) {
      experts_ = moe.num_experts;
      for (const auto& layer : lm->model->layers->children()) {
        auto* decoder_layer = layer->as<model::DecoderLayerImpl>();
        if (decoder_layer == nullptr || !decoder_layer->moe) continue;
        decoder_layer->moe->CollectRouterLogits(&router_logits_);
        routed_.push_back(decoder_layer->moe.get());
      }
    }
  }
  ~Stage() {
    for (model::SparseMoeImpl* m : routed_) m->CollectRouterLogits(nullptr);
  }
  Stage(const Stage&) = delete;
  Stage& operator=(const Stage&) = delete;
  bool aux() const { return experts_ > 0; }
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
  // A message buffer: an activation (or its gradient) of `b` followed by `extra` fp32 values.
  torch::Tensor EmptyMessage(const Batch& b, int64_t extra) const {
    torch::Tensor t = Empty(b);
    if (!aux()) return t;
    return torch::empty({t.numel() + PackedLength(extra, ctx_.dtype)}, t.options());
  }
  // Splits a received message into the activation (returned) and its fp32 extra values (appended to `queue`).
  torch::Tensor Unpack(const Batch& b, const torch::Tensor& message, std::deque<torch::Tensor>* queue) const {
    if (!aux()) return message;
    torch::Tensor t = Empty(b);
    queue->push_back(message.narrow(0, t.numel(), message.numel() - t.numel()).clone().view(torch::kFloat32));
    return message.narrow(0, 0, t.numel()).view(t.sizes()).clone();  // its own leaf, not a view
  }
  torch::Tensor PopFront(std::deque<torch::Tensor>* queue) {
    if (!aux()) return {};
    torch::Tensor t = queue->front();
    queue->pop_front();
    return t;
  }

  // This stage's parts of the load-balancing loss from the router logits its layers just produced (the sums of
  // LoadBalancingLoss in trainer/model/moe.cc, before they are combined).
  RouterParts TakeRouterParts(const torch::Tensor& attention_mask) {
    const int64_t k = lm_->config().moe.num_experts_per_tok;
    auto fp32 = torch::TensorOptions().dtype(torch::kFloat32).device(ctx_.device);
    RouterParts parts{torch::zeros({experts_}, fp32), torch::zeros({experts_}, fp32), torch::zeros({1}, fp32)};
    // Checkpointed layers (activation checkpointing, ZeRO-3) hand their logits to the model instead of our sink.
    for (torch::Tensor& t : lm_->TakeRouterLogits()) router_logits_.push_back(std::move(t));
    for (const torch::Tensor& layer_logits : router_logits_) {
      torch::Tensor probs = torch::softmax(layer_logits.to(ctx_.device), -1);  // [N, E]
      torch::Tensor selected = std::get<1>(torch::topk(probs, k, -1));         // [N, k]
      torch::Tensor row_weight =
          attention_mask.defined() ? attention_mask.reshape({-1}).to(fp32) : torch::ones({layer_logits.size(0)}, fp32);
      parts.picks =
          parts.picks +
          torch::zeros({experts_}, fp32).scatter_add(0, selected.reshape({-1}), row_weight.repeat_interleave(k));
      parts.probs = parts.probs + (probs.to(torch::kFloat32) * row_weight.unsqueeze(-1)).sum(0);
      parts.rows = parts.rows + row_weight.sum();
    }
    router_logits_.clear();
    return parts;
  }

  // This stage's layers on micro-batch m. `input` is the received activation (undefined on the first stage, which
  // embeds). Returns the activation to send, or on the last stage the summed token losses and their count (the
  // context's last_stage_loss when it has one).
  torch::Tensor RunLayers(const Batch& b, int64_t m, const torch::Tensor& input, int64_t* label_tokens = nullptr) {
    torch::Tensor x = first() ? lm_->Embed(b.input_ids) : input;
    const auto& st = lm_->stage();
    x = lm_->RunLayers(x, InputsOf(b), st.layer_begin, st.layer_end);
    if (!last()) return x;
    if (ctx_.last_stage_loss) return ctx_.last_stage_loss(lm_->FinalNorm(x), m);
    auto [sum, count] = lm_->LossSum(lm_->FinalNorm(x), model::ShiftLabels(b.labels));
    if (label_tokens != nullptr) *label_tokens += count;
    return sum;
  }

  // Training forward: the loss (summed token losses / denom) on the last stage, added to *loss_sum; elsewhere the
  // activation to send.
  torch::Tensor Forward(const Batch& b, int64_t m, const torch::Tensor& input, double denom, double* loss_sum,
                        InFlight* f) {
    torch::Tensor out = RunLayers(b, m, input);
    torch::Tensor aux_loss;
    if (aux()) {
      // The load-balancing loss over stages: earlier stages' cumulative parts [F, P, R] and this stage's.
      const int64_t E = experts_;
      RouterParts mine = TakeRouterParts(b.attention_mask);
      torch::Tensor before = first() ? torch::zeros({2 * E + 1}, mine.picks.options()) : PopFront(&stats_in_);
      torch::Tensor picks = before.narrow(0, 0, E) + mine.picks, rows = before.narrow(0, 2 * E, 1) + mine.rows;
      torch::Tensor probs_before = before.narrow(0, E, E);
      if (!last()) {
        stats_out_.push_back(torch::cat({picks, probs_before + mine.probs.detach(), rows}));
        f->aux_probs = mine.probs;
      } else {
        f->aux_totals = torch::cat({picks, rows});
        aux_loss = AuxLoss(f->aux_totals, probs_before + mine.probs);
      }
    }
    if (!last()) return out;
    if (ctx_.last_stage_loss) {
      *loss_sum += out.item<double>();
      return out;
    }
    torch::Tensor loss = out / denom;
    // Mixture-of-experts: + router_aux_loss_coef * the load-balancing loss of this micro-batch, as HF adds it.
    if (aux_loss.defined()) {
      loss = loss + aux_loss.to(loss.device());
    } else if (lm_->HasSparseLayers()) {
      loss = loss + lm_->TakeAuxLoss(b.attention_mask).to(loss.device());
    }
    *loss_sum += loss.item<double>();
    return loss;
  }
  // coef * E * sum_e F_e P_e / R^2 from totals [F, R] and summed probabilities P [E].
  torch::Tensor AuxLoss(const torch::Tensor& totals, const torch::Tensor& probs) const {
    const int64_t E = experts_;
    torch::Tensor rows = totals.narrow(0, E, 1).squeeze(0);
    return (totals.narrow(0, 0, E) * probs).sum() / (rows * rows) *
           (static_cast<double>(E) * lm_->config().moe.router_aux_loss_coef);
  }
  // The totals of the micro-batch now going backward: received with its gradient, or on the last stage its own.
  torch::Tensor BackwardTotals(const InFlight& f) { return last() ? f.aux_totals : PopFront(&totals_in_); }
  void QueueTotalsBack(const torch::Tensor& totals) {
    if (aux() && !first()) totals_out_.push_back(totals);
  }

  // Posts what is given (forward activation to the next stage, input gradient to the previous) and receives what is
  // asked, pairing the operations with one neighbour. With the load-balancing loss over stages, every activation
  // message carries its micro-batch's cumulative router parts and every gradient message its totals (queued in
  // micro-batch order: forward and backward each visit the micro-batches in order).
  void SendNext(const torch::Tensor& t) {
    if (!last()) ctx_.pp->Send(Pack(t, PopFront(&stats_out_)), rank_ + 1);
  }
  void SendPrev(const torch::Tensor& t) {
    if (!first()) ctx_.pp->Send(Pack(t, PopFront(&totals_out_)), rank_ - 1);
  }
  torch::Tensor RecvPrev(const Batch& b) {
    if (first()) return {};
    torch::Tensor t = EmptyMessage(b, 2 * experts_ + 1);
    ctx_.pp->Recv(t, rank_ - 1);
    return Unpack(b, t, &stats_in_);
  }
  torch::Tensor RecvNext(const Batch& b) {
    if (last()) return {};
    torch::Tensor t = EmptyMessage(b, experts_ + 1);
    ctx_.pp->Recv(t, rank_ + 1);
    return Unpack(b, t, &totals_in_);
  }
  // Send the activation forward while receiving the gradient of an earlier one from the next stage.
  torch::Tensor SendNextRecvNext(const torch::Tensor& act, const Batch& grad_of) {
    if (last()) return {};
    torch::Tensor g = EmptyMessage(grad_of, experts_ + 1);
    const torch::Tensor message = Pack(act, PopFront(&stats_out_));
    ctx_.pp->SendRecv(&message, rank_ + 1, &g, rank_ + 1);
    return Unpack(grad_of, g, &totals_in_);
  }
  // Send an input gradient back while receiving the next activation from the previous stage.
  torch::Tensor SendPrevRecvPrev(const torch::Tensor& grad, const Batch& act_of) {
    if (first()) return {};
    torch::Tensor a = EmptyMessage(act_of, 2 * experts_ + 1);
    const torch::Tensor message = Pack(grad, PopFront(&totals_out_));
    ctx_.pp->SendRecv(&message, rank_ - 1, &a, rank_ - 1);
    return Unpack(act_of, a, &stats_in_);
  }

 private:
  model::CausalLM& lm_;
  const StageContext& ctx_;
  int64_t micro_batches_ = 0, backwards_ = 0;
  int rank_ = 0, size_ = 1;
  // The load-balancing loss over stages (experts_ > 0): this stage's router logits and the queued parts.
  int64_t experts_ = 0;
  std::vector<model::SparseMoeImpl*> routed_;
  std::vector<torch::Tensor> router_logits_;
  std::deque<torch::Tensor> stats_in_, stats_out_, totals_in_, totals_out_;
};

InFlight RunForward(Stage& stage, const std::vector<Batch>& micro, int64_t m, torch::Tensor received, double denom,
                    double* loss_sum) {
  InFlight f;
  if (received.defined()) f.input = received.requires_grad_(true);
  f.output = stage.Forward(micro[m], m, f.input, denom, loss_sum, &f);
  return f;
}

// Backward of one micro-batch: from the loss on the last stage, else from the gradient received for the output.
// Returns the gradient of the stage input to send back (zeros when nothing upstream needs it).
torch::Tensor RunBackward(Stage& stage, InFlight& f, const torch::Tensor& output_grad) {
  stage.BeforeBackward();
  const torch::Tensor totals = stage.aux() ? stage.BackwardTotals(f) : torch::Tensor();
  if (stage.last()) {
    f.output.backward();
  } else if (totals.defined() && f.aux_probs.requires_grad()) {
    // This stage's share of the load-balancing loss's gradient joins the gradient from the next stage.
    torch::Tensor aux_loss = stage.AuxLoss(totals, f.aux_probs);
    if (f.output.requires_grad()) {
      torch::autograd::backward({f.output, aux_loss}, {output_grad, torch::ones_like(aux_loss)});
    } else {
      aux_loss.backward();
    }
  } else if (f.output.requires_grad()) {
    torch::autograd::backward({f.output}, {output_grad});
  }
  if (totals.defined()) stage.QueueTotalsBack(totals);
  torch::Tensor g;
  if (!stage.first()) g = f.input.grad().defined() ? f.input.grad() : torch::zeros_like(f.input);
  f = InFlight{};  // free the activations
  return g;
}

}  // namespace

double TrainMicroBatches(model::CausalLM& lm, const std::vector<Batch>& micro, double denom, const StageContext& ctx) {
  const int64_t m_count = static_cast<int64_t>(micro.size());
  Stage stage(lm, ctx, m_count);
  double loss_sum = 0;
  std::vector<InFlight> flight(micro.size());
  if (ctx.schedule == PipelineSchedule::kGPipe || stage.size() == 1) {
    // All forwards, then all backwards (with one stage: forward and backward of each micro-batch in turn).
    if (stage.size() == 1) {
      for (int64_t m = 0; m < m_count; ++m) {
        flight[m] = RunForward(stage, micro, m, {}, denom, &loss_sum);
        RunBackward(stage, flight[m], {});
      }
      return loss_sum;
    }
    for (int64_t m = 0; m < m_count; ++m) {
      flight[m] = RunForward(stage, micro, m, stage.RecvPrev(micro[m]), denom, &loss_sum);
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
    flight[m] = RunForward(stage, micro, m, stage.RecvPrev(micro[m]), denom, &loss_sum);
    if (!stage.last()) stage.SendNext(flight[m].output.detach());
  }
  torch::Tensor received = steady > 0 ? stage.RecvPrev(micro[warmup]) : torch::Tensor();
  for (int64_t i = 0; i < steady; ++i) {
    const int64_t fwd = warmup + i, bwd = i;
    flight[fwd] = RunForward(stage, micro, fwd, received, denom, &loss_sum);
    torch::Tensor out_grad =
        stage.last() ? torch::Tensor() : stage.SendNextRecvNext(flight[fwd].output.detach(), micro[bwd]);
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

void ForwardMicroBatches(model::CausalLM& lm, const std::vector<Batch>& micro, const StageContext& ctx,
                         const std::function<void(int64_t m, const torch::Tensor& hidden)>& on_last) {
  torch::NoGradGuard no_grad;
  StageContext forward_only = ctx;
  forward_only.last_stage_loss = [&on_last](const torch::Tensor& hidden, int64_t m) {
    on_last(m, hidden);
    return torch::Tensor();
  };
  Stage stage(lm, forward_only);
  for (int64_t m = 0; m < static_cast<int64_t>(micro.size()); ++m) {
    torch::Tensor out = stage.RunLayers(micro[m], m, stage.RecvPrev(micro[m]));
    if (!stage.last()) stage.SendNext(out);
  }
}

std::pair<double, int64_t> EvalMicroBatches(model::CausalLM& lm, const std::vector<Batch>& micro,
                                            const StageContext& ctx) {
  torch::NoGradGuard no_grad;
  StageContext lm_loss = ctx;
  lm_loss.last_stage_loss = nullptr;
  Stage stage(lm, lm_loss);
  double sum = 0;
  int64_t count = 0;
  for (int64_t m = 0; m < static_cast<int64_t>(micro.size()); ++m) {
    const Batch& b = micro[m];
    torch::Tensor out = stage.RunLayers(b, m, stage.RecvPrev(b), &count);
    if (stage.last()) {
      sum += out.item<double>();
    } else {
      stage.SendNext(out);
    }
  }
  return {sum, count};
}

}  // namespace anneal::train
