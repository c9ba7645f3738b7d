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


def test_the_exportable_op_computes_the_padded_kernel(padded_batch):
    lstm, x, lengths, real = padded_batch
    lstm.eval()
    with torch.no_grad():
        assert torch.allclose(bilstm_exportable(lstm, x, lengths) * real, bilstm_padded(lstm, x, lengths) * real)
        assert torch.allclose(bilstm_exportable(lstm, x, lengths) * real, packed_reference(lstm, x, lengths), atol=1e-6)


def test_a_quantized_lstm_runs_packed_and_stays_close(padded_batch):
    lstm, x, lengths, real = padded_batch
    quantized = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lstm), {torch.nn.LSTM}, dtype=torch.qint8)
    with torch.no_grad():
        ours = run_bilstm(quantized[0], x, lengths, impl="padded") * real
        reference = packed_reference(lstm, x, lengths)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max() < 0.02  # int8 weights: close (reading padding is off by ~0.2)
