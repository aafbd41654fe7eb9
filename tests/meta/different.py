"""Correct backends that compute differently from the reference.  The suite must pass each:
a check that fails them is a false positive.

Every one validates through the shared checks (``lora_ref.validation``), as any backend must.
"""

from __future__ import annotations

import itertools

import torch

from lora_ref import ReferenceLoRABackend


class Float32ChunkedAccumulation(ReferenceLoRABackend):
    """Float32 products summed in 64-wide K chunks, chunk sums added in float32; the fused paths
    round their shrink result to the input dtype, as the contract allows."""

    @staticmethod
    def _chunked(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b.T`` in float32, the inner dim in chunks of 64."""
        acc = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float32, device=a.device)
        for k0 in range(0, a.shape[1], 64):
            acc += a[:, k0 : k0 + 64].float() @ b[:, k0 : k0 + 64].float().T
        return acc

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        ref = super().run_lora_a_sgemm(x, weights, stack_num)  # validation, shape
        out = torch.zeros_like(ref)
        for rows, w, r, _ in self._segments():
            out[rows, : stack_num * r] = self._chunked(x[rows], weights[w, : stack_num * r]).to(
                x.dtype
            )
        return out

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        ref = super().run_lora_b_sgemm(x, weights, base_output)
        out = base_output.clone() if base_output is not None else torch.zeros_like(ref)
        for rows, w, r, s in self._segments():
            if r == 0:
                continue
            term = self._chunked(x[rows, :r], weights[w, :, :r]) * s
            base = base_output[rows].float() if base_output is not None else 0.0
            out[rows] = (term + base).to(x.dtype)
        return out

    def _fused(self, x, lora_a, lora_b, base_output, T, N, offsets):
        out = base_output.clone() if base_output is not None else x.new_zeros(T, N)
        for rows, w, r, s in self._segments():
            if r == 0:
                continue
            for j, (lo, hi) in enumerate(itertools.pairwise(offsets)):
                inter = self._chunked(x[rows], lora_a[w, j * r : (j + 1) * r]).to(x.dtype)
                term = self._chunked(inter, lora_b[w, lo:hi, :r]) * s
                base = base_output[rows, lo:hi].float() if base_output is not None else 0.0
                out[rows, lo:hi] = (term + base).to(x.dtype)
        return out


class GroupedBmmInPlace(ReferenceLoRABackend):
    """Rows gathered per adapter and multiplied with one batched float32 matmul per op; the
    result is written into ``base_output`` in place and returned."""

    def _groups(self):
        """``(rows, slot, rank, scaling)`` per adapter: all its rows, segments merged."""
        merged: dict[int, list] = {}
        for rows, w, r, s in self._segments():
            merged.setdefault(w, [[], r, s])[0].append(rows)
        return [(torch.cat(rs), w, r, s) for w, (rs, r, s) in merged.items()]

    def run_lora_a_sgemm(self, x, weights, stack_num=1):
        ref = super().run_lora_a_sgemm(x, weights, stack_num)
        out = torch.zeros_like(ref)
        for rows, w, r, _ in self._groups():
            a = weights[w, : stack_num * r].float()
            out[rows, : stack_num * r] = torch.bmm(x[rows].float()[None], a.T[None])[0].to(x.dtype)
        return out

    def run_lora_b_sgemm(self, x, weights, base_output=None):
        ref = super().run_lora_b_sgemm(x, weights, base_output)
        out = base_output if base_output is not None else torch.zeros_like(ref)
        for rows, w, r, s in self._groups():
            if r == 0:
                continue
            b = weights[w, :, :r].float()
            term = torch.bmm(x[rows, :r].float()[None], b.T[None])[0] * s
            out[rows] = (term + out[rows].float()).to(x.dtype)
        return out

    def _fused(self, x, lora_a, lora_b, base_output, T, N, offsets):
        out = base_output if base_output is not None else x.new_zeros(T, N)
        for rows, w, r, s in self._groups():
            if r == 0:
                continue
            xs = x[rows].float()
            for j, (lo, hi) in enumerate(itertools.pairwise(offsets)):
                a = lora_a[w, j * r : (j + 1) * r].float()
                inter = torch.bmm(xs[None], a.T[None])[0].to(x.dtype).float()
                b = lora_b[w, lo:hi, :r].float()
                term = torch.bmm(inter[None], b.T[None])[0] * s
                out[rows, lo:hi] = (term + out[rows, lo:hi].float()).to(x.dtype)
        return out


class RoundedIntermediateFloat64(ReferenceLoRABackend):
    """The reference's float64 loops, except that the fused paths round the shrink result to
    the input dtype before the expand, which the contract allows."""

    def _fused(self, x, lora_a, lora_b, base_output, T, N, offsets):
        out = self._base(base_output, T, N, x)
        for rows, w, r, s in self._segments():
            if r == 0:
                continue
            xs = x[rows].double()
            for j, (lo, hi) in enumerate(itertools.pairwise(offsets)):
                inter = (xs @ lora_a[w, j * r : (j + 1) * r].double().T).to(x.dtype).double()
                out[rows, lo:hi] += s * (inter @ lora_b[w, lo:hi, :r].double().T)
        return self._finish(out, x.dtype)


CORRECT = [Float32ChunkedAccumulation, GroupedBmmInPlace, RoundedIntermediateFloat64]
