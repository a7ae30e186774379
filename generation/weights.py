"""The format of the weights the local model decodes with on the CPU, where a decoding step is
bound by reading every weight once (135M float32 weights are 540 MB a token):

- float32 (the default): the loaded model itself;
- int8 (STORYLOOM_WEIGHTS=int8): the decoder layers' linear weights in int8, per output
  channel, multiplied with the activations quantized to int8 per token (torch's int8 matrix
  product, exact integer sums); the output head stays float32. Each row of a batch is quantized
  on its own and the sums are exact; the engine attends row by row for int8 (rounding in
  attention would otherwise tip activations into other integers), so a row decodes the same in
  a batch as alone. Before the weights are rounded, the activations' outlier channels are moved
  into the weights (SmoothQuant, Xiao et al. 2023), an exact change of the float model folded
  into the norms and the up projection, measured on the first quarter of a shipped public-domain
  novel.

benchmarks/weights_bench.py measures both on speed and on the held-out DITTO evaluation: int8
decodes about 1.6 times as fast with the perplexity within 0.5%, but under the app's decoding
(guard + DITTO) rep-4 is 6% higher and 15 of 486 held-out continuations repeated a sentence
against float32's 8, so it is not the default (the bar: repetition no worse by more than 5%). Also
measured and left out: torch's dynamic quantization (quantize_dynamic) quantizes a call's
activations as one tensor, which multiplied the perplexity by five on this model and ties each
row's numbers to its batch-mates'; bfloat16 kept the perplexity but its rounding made greedy rows
in a batch differ from the same rows alone; quantizing the output head too was faster again but
cost most of the perplexity int8 loses."""

from pathlib import Path

import torch

from generation.adapters import plain_copy

FORMATS = ("float32", "int8")
CALIBRATION = Path(__file__).resolve().parents[1] / "assets" / "texts" / "the-great-gatsby.txt"
CALIBRATION_TOKENS = 2048
SMOOTHING = 0.5  # SmoothQuant's alpha: how much of an outlier's size moves from activation to weight
SMOOTHABLE = ("llama", "mistral", "qwen2", "qwen3")  # norms that multiply by their weight; q, k, v, gate, up, down


def decoding_format(fmt: str, device: str) -> str:
    """The format to decode with on `device`: int8 only on a CPU, where torch must have the int8
    matrix product; on a GPU the model is loaded in bfloat16 and decodes as loaded ("float32"
    here means: as loaded, nothing converted)."""
    if fmt not in FORMATS:
        raise ValueError(f"weights must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if device != "cpu" or fmt == "float32":
        return "float32"
    try:
        torch._int_mm(torch.ones((1, 8), dtype=torch.int8), torch.ones((8, 8), dtype=torch.int8))
    except RuntimeError as e:
        raise ValueError(f"int8 weights need torch's int8 matrix product, which this CPU lacks: {e}") from e
    return "int8"


def converted(model, tokenizer, adapter: bool = True):
    """A copy of `model` with int8 decoder layers (the output head stays float32), smoothed first
    where the architecture allows, an attached adapter's update folded in (adapter=True) or left
    out (the base model); `model` is left as it is, for the gradient work (SCA) that wants float32."""
    copy = plain_copy(model, adapter)
    if copy.config.model_type in SMOOTHABLE:
        smooth(copy, calibration_ids(tokenizer, copy.device))
    head = copy.get_output_embeddings()
    for parent in list(copy.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child is not head:
                setattr(parent, name, Int8Linear(child))
    return copy


def calibration_ids(tokenizer, device) -> torch.Tensor:
    """[1, CALIBRATION_TOKENS] token ids: story prose from the novel's first quarter (the DITTO
    evaluation holds out its last), as an assistant's reply in the model's chat template."""
    from generation.corpus import read_corpus

    prose = "\n\n".join(read_corpus(CALIBRATION).train[:200])
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Write the next part of the story."},
                                          {"role": "assistant", "content": prose}], tokenize=False)
    return tokenizer(chat, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :CALIBRATION_TOKENS].to(device)


@torch.no_grad()
def smooth(model, ids: torch.Tensor, alpha: float = SMOOTHING) -> None:
    """SmoothQuant on a Llama-shaped model, in place: for each linear layer's input channel j, a
    factor s_j = max|x_j|^alpha / max|w_j|^(1 - alpha) (activation peaks measured on `ids`)
    divides the activations and multiplies the weights, so the float model computes the same
    while int8 activations lose less to outliers. The division is folded into what makes the
    input: the attention and MLP norms (for q, k, v and gate, up) and the up projection (for down)."""
    layers = model.model.layers
    inputs = [m for layer in layers for m in (layer.self_attn.q_proj, layer.mlp.gate_proj, layer.mlp.down_proj)]
    peaks: dict = {}

    def record(module, args, _output):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).abs().amax(dim=0).float()
        peaks[module] = torch.maximum(peaks[module], x) if module in peaks else x

    hooks = [m.register_forward_hook(record) for m in inputs]
    try:
        for start in range(0, ids.shape[1], 512):  # the window limits memory, not accuracy: peaks are per token
            model(input_ids=ids[:, start:start + 512])
    finally:
        for hook in hooks:
            hook.remove()

    def factors(peak: torch.Tensor, readers: list) -> torch.Tensor:
        weight = torch.cat([r.weight.abs() for r in readers]).amax(dim=0).float()
        return (peak.clamp(min=1e-5) ** alpha / weight.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)

    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        for norm, readers in ((layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj]),
                              (layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj])):
            s = factors(peaks[readers[0]], readers)
            norm.weight.div_(s.to(norm.weight.dtype))
            for r in readers:
                r.weight.mul_(s.to(r.weight.dtype))
        s = factors(peaks[mlp.down_proj], [mlp.down_proj])  # act(gate) * up: scaling up's outputs scales it
        mlp.up_proj.weight.div_(s[:, None].to(mlp.up_proj.weight.dtype))
        mlp.down_proj.weight.mul_(s.to(mlp.down_proj.weight.dtype))


class Int8Linear(torch.nn.Module):
    """A linear layer with per-output-channel int8 weights that quantizes its input per token
    (symmetric, int8) and multiplies in int8 with int32 sums (torch._int_mm)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        # [out, in] as stored, read through a transposed view: the layout _int_mm is fastest with here
        self.register_buffer("weight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).float()
        x_scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
        quantized = torch.round(rows / x_scale).clamp(-127, 127).to(torch.int8)
        out = torch._int_mm(quantized, self.weight.t()).float() * x_scale * self.scale
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], out.shape[-1]).to(x.dtype)
