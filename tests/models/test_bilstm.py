"""The BiLSTM kernels: padded, packed, quantized and exportable agree at every real step."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from emotion_lab.models.bilstm import bilstm_exportable, bilstm_padded, run_bilstm


@pytest.fixture
def padded_batch():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True, dropout=0.0)
    lengths = torch.tensor([9, 3, 6, 1])
    real = (torch.arange(9)[None] < lengths[:, None]).unsqueeze(-1)
    x = torch.randn(4, 9, 6) * real  # right padding, as the collators produce it
    return lstm, x, lengths, real


def packed_reference(lstm, x, lengths):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.shape[1])[0]


def test_padded_bilstm_matches_packed_sequences_in_values_and_gradients(padded_batch):
    lstm, x, lengths, real = padded_batch
    reference = packed_reference(lstm, x, lengths)
    (reference * real).sum().backward()
    reference_grad = lstm.weight_hh_l1_reverse.grad.clone()
    lstm.zero_grad()
    ours = bilstm_padded(lstm, x, lengths)
    (ours * real).sum().backward()

    # The backward direction at step 0 of the length-3 row must have read only its 3 real steps.
    assert torch.allclose(ours * real, reference, atol=1e-6)
    assert torch.allclose(lstm.weight_hh_l1_reverse.grad, reference_grad, atol=1e-5)


def one_by_one_reference(lstm, x, lengths):
    """Each sentence alone, cut to its length, through nn.LSTM itself: no padding for anyone to mishandle."""
    out = torch.zeros(*x.shape[:2], 2 * lstm.hidden_size)
    for row, length in enumerate(lengths.tolist()):
        out[row, :length] = lstm(x[row : row + 1, :length])[0][0]
    return out


@pytest.mark.parametrize("kernel", [bilstm_padded, bilstm_exportable])
def test_each_kernel_gives_what_nn_lstm_gives_each_sentence_alone(padded_batch, kernel):
    lstm, x, lengths, real = padded_batch
    lstm.eval()
    with torch.no_grad():
        assert torch.allclose(kernel(lstm, x, lengths) * real, one_by_one_reference(lstm, x, lengths), atol=1e-6)


def test_under_torch_export_the_network_runs_the_exportable_op_with_a_dynamic_length(padded_batch):
    lstm, x, lengths, real = padded_batch
    lstm.eval()

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = lstm

        def forward(self, x, lengths):
            return run_bilstm(self.lstm, x, lengths)

    length = torch.export.Dim("length", min=2, max=64)
    program = torch.export.export(Head(), (x, lengths), dynamic_shapes=({1: length}, None))
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "emotion_lab.bilstm_layer.default" in ops
    longer = torch.cat([x, torch.zeros(4, 3, 6)], dim=1)  # 12 steps: not the example's 9
    with torch.no_grad():
        got = program.module()(longer, lengths)
    assert got.shape == (4, 12, 10)
    assert torch.allclose(got[:, :9] * real, one_by_one_reference(lstm, x, lengths), atol=1e-6)


def test_a_quantized_lstm_runs_packed_and_stays_close(padded_batch):
    lstm, x, lengths, real = padded_batch
    quantized = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lstm), {torch.nn.LSTM}, dtype=torch.qint8)
    with torch.no_grad():
        ours = run_bilstm(quantized[0], x, lengths, impl="padded") * real
        reference = packed_reference(lstm, x, lengths)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max() < 0.02  # int8 weights: close (reading padding is off by ~0.2)
