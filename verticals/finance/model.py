"""The fused fraud model: a causal TCN over account histories + a GNN over the causal ego-graph.

Why both: account takeover is a *temporal* anomaly in one account's history (the TCN sees it), while
laundering rings, fans and chains are *structural* (the GNN sees them); a transaction is scored
with both of its endpoints' views and the transaction itself, fused by an MLP head.

- TCN (pytorch-tcn, `causal=True`) reads the payer's and the payee's last `history` events; an scSE
  block (common.blocks, spatial_dims=1) reweights its channels; the newest step is the summary.
- GNN (torch-geometric `MessagePassing`) on each transaction's ego-graph in the directed multigraph:
  layer 1 passes messages from each endpoint's recent counterparties (parallel edges kept) with
  edge features (amount, channel, roundness, age of the edge) along the edge direction (who paid
  me) and, with separate weights, against it (whom I paid: reverse message passing); neighbours
  carry their own causal node state, so two hops reach the centre. Layer 2 passes messages across
  the scored edge itself, payer -> payee and payee -> payer.
- With `event_dim` > 0 every event of a history and every neighbour edge also carries the bank's
  columns of its transaction (compressed, columns.event_matrix): the TCN sees how they change
  along an account's history (a new device, a jump of a counter), the GNN weighs each edge by them.
- The ego-graphs come from `features.featurise` as fixed-size tensors, so the whole module,
  message passing included, exports to ONNX with a dynamic batch (nothing is left outside).
- Normalisation statistics are buffers: federation exchanges `state_dict()` only.
"""

from __future__ import annotations

import torch
from pytorch_tcn import TCN
from torch import nn
from torch_geometric.nn import MessagePassing

from common.blocks import attention
from verticals.finance.features import F_AGG, F_EDGE, F_NBR, F_SEQ, F_TXN, N_CHANNELS

_EDGE_ATTR = [0, 2, 3, *range(4, 4 + N_CHANNELS), F_EDGE]  # amount, flags, channel, age of edge (no direction)
_CP_STATE = slice(4 + N_CHANNELS, F_EDGE)  # the counterparty's snapshot: the neighbour's node features


def pair_rows(x: torch.Tensor) -> torch.Tensor:
    """(2B, C) rows ordered payer, payee, payer, ... -> (B, 2C) = [payer | payee]: `x.reshape(B, 2C)`.

    Written as a channel concat of the even and odd rows (same numbers) because structural pruning
    cannot follow channels through a reshape that moves rows into channels: Torch-Pruning's
    dependency graph cut the wrong head columns, so the TCN's residual channels and the GNN's node
    update had to be left whole, and those dominate the model's arithmetic. The rows are sliced from
    a 3-D view: Torch-Pruning 1.6 reads any slice of a 2-D tensor as a slice of its channels.
    """
    y = x.unsqueeze(-1)
    return torch.cat([y[0::2], y[1::2]], 1).squeeze(-1)


class DirectedEdgeConv(MessagePassing):
    """Sum over one direction's edges of `weight * MLP([x_src, edge_attr])` (GINE-like, masked).

    `star=k` declares that edges come sorted by target with exactly k per target (our ego-graphs),
    so the sum is a reshape instead of a scatter: same result (tests/test_finance.py checks it),
    but ONNX Runtime's ScatterElements was the slowest op of the whole model at batch 4,096.
    """

    def __init__(self, node_dim: int, edge_dim: int, hidden: int, star: int = 0) -> None:
        super().__init__(aggr="add")
        self.star = star
        self.mlp = nn.Sequential(nn.Linear(node_dim + edge_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    def aggregate(self, inputs: torch.Tensor, index: torch.Tensor, ptr=None, dim_size=None) -> torch.Tensor:
        if self.star:
            return inputs.reshape(-1, self.star, inputs.shape[-1]).sum(1)
        return super().aggregate(inputs, index, ptr=ptr, dim_size=dim_size)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor, edge_weight: torch.Tensor
    ) -> torch.Tensor:
        return self.propagate(edge_index, x=x, edge_attr=edge_attr, edge_weight=edge_weight)

    def message(self, x_j: torch.Tensor, edge_attr: torch.Tensor, edge_weight: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x_j, edge_attr], -1)) * edge_weight.unsqueeze(-1)


class EgoGraphGNN(nn.Module):
    """Two message-passing layers over each transaction's causal ego-graph (see module docstring)."""

    def __init__(self, hidden: int, history: int, extra_dim: int = 0, event_dim: int = 0) -> None:
        super().__init__()
        self.event_dim = event_dim
        edge_dim = len(_EDGE_ATTR) + event_dim
        self.forward_conv = DirectedEdgeConv(F_AGG, edge_dim, hidden, star=history)
        self.reverse_conv = DirectedEdgeConv(F_AGG, edge_dim, hidden, star=history)
        self.node = nn.Sequential(nn.Linear(F_AGG + 2 * hidden, hidden), nn.ReLU())
        pair_edge_dim = F_SEQ + extra_dim  # the scored edge carries the bank's extra columns too
        self.pay_conv = DirectedEdgeConv(hidden, pair_edge_dim, hidden)
        self.paid_conv = DirectedEdgeConv(hidden, pair_edge_dim, hidden)
        self.update = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU())

    def forward(
        self, nbr: torch.Tensor, incoming: torch.Tensor, centre: torch.Tensor, txn_edge: torch.Tensor
    ) -> torch.Tensor:
        """nbr (B,2,H,F_NBR) normalised (padding rows 0), incoming (B,2,H) 1 for edges paid to the centre,
        centre (B,2,F_AGG), txn_edge (B,F_SEQ+extra) -> (B, 2*hidden)."""
        b, _, h, _ = nbr.shape
        n_centre = 2 * b
        flat = nbr.reshape(n_centre * h, F_NBR + self.event_dim)
        x = torch.cat([centre.reshape(n_centre, F_AGG), flat[:, _CP_STATE]], 0)
        src = n_centre + torch.arange(n_centre * h, device=nbr.device)
        dst = torch.arange(n_centre, device=nbr.device).repeat_interleave(h)
        edge_index = torch.stack([src, dst])
        attr = flat[:, _EDGE_ATTR]
        if self.event_dim:  # the edge's bank columns sit between its age and `valid`
            attr = torch.cat([attr, flat[:, F_NBR - 1 : F_NBR - 1 + self.event_dim]], -1)
        valid, incoming = flat[:, -1], incoming.reshape(-1)
        msg_in = self.forward_conv(x, edge_index, attr, valid * incoming) / h
        msg_out = self.reverse_conv(x, edge_index, attr, valid * (1 - incoming)) / h
        node = self.node(torch.cat([x[:n_centre], msg_in, msg_out], -1))
        # layer 2 across the scored edge: payer (2i) -> payee (2i+1), and back
        payer = torch.arange(b, device=nbr.device) * 2
        ones = torch.ones(b, device=nbr.device)
        to_payee = self.pay_conv(node, torch.stack([payer, payer + 1]), txn_edge, ones)
        to_payer = self.paid_conv(node, torch.stack([payer + 1, payer]), txn_edge, ones)
        node = node + self.update(torch.cat([node, to_payee + to_payer], -1))
        return pair_rows(node)


class FraudNet(nn.Module):
    """Per-transaction fraud logit from (seq, nbr, txn) as built by `features.featurise`."""

    def __init__(
        self,
        *,
        arch: str = "fused",
        history: int = 16,
        tcn_channels: int = 16,
        tcn_levels: int = 2,
        tcn_kernel: int = 3,
        attention_kind: str = "scse",
        gnn_hidden: int = 16,
        head_hidden: int = 48,
        dropout: float = 0.1,
        extra_dim: int = 0,
        event_dim: int = 0,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.extra_dim = extra_dim  # width of the bank's extra columns appended to each transaction row
        self.event_dim = event_dim  # width of their compressed form in each history event and edge
        txn_dim = F_TXN + extra_dim
        for name, dim in (("seq", F_SEQ + event_dim), ("nbr", F_NBR + event_dim), ("txn", txn_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))
        self.register_buffer("stats_ready", torch.zeros(()))
        width = head_hidden
        self.txn_mlp = nn.Sequential(nn.Linear(txn_dim, width), nn.ReLU())
        fused = width
        if arch in ("fused", "tcn"):
            channels = [tcn_channels] * tcn_levels
            self.tcn = TCN(
                F_SEQ + event_dim, channels, kernel_size=tcn_kernel, causal=True, use_norm=None, dropout=dropout
            )
            self.tcn_attention = attention(attention_kind, 1, tcn_channels)
            fused += 2 * tcn_channels
        if arch in ("fused", "gnn"):
            self.gnn = EgoGraphGNN(gnn_hidden, history, extra_dim, event_dim)
            fused += 2 * gnn_hidden
        self.head = nn.Sequential(
            nn.Linear(fused, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, width // 2), nn.ReLU()
        )
        self.out = nn.Linear(width // 2, 1)
        # one linear logit per branch added to the head's: each branch gets a direct gradient path, so
        # the fused model does not learn slower than an ablation that has only one branch
        self.branch_logits = nn.Linear(fused, 1)

    @torch.no_grad()
    def set_stats(self, seq: torch.Tensor, nbr: torch.Tensor, txn: torch.Tensor) -> None:
        """Fit the normalisation buffers on real (valid) rows; the 'valid' flags stay 0/1."""
        k = self.event_dim
        for name, data in (("seq", seq.reshape(-1, F_SEQ + k)), ("nbr", nbr.reshape(-1, F_NBR + k)), ("txn", txn)):
            rows = data[data[:, -1] > 0] if name != "txn" else data
            mean, std = rows.mean(0), rows.std(0).clamp_min(1e-3)
            if name != "txn":
                mean[-1], std[-1] = 0.0, 1.0
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(std)
        self.stats_ready.fill_(1.0)

    def forward(self, seq: torch.Tensor, nbr: torch.Tensor, txn: torch.Tensor) -> torch.Tensor:
        incoming = nbr[..., 1] * nbr[..., -1]
        seq = (seq - self.seq_mean) / self.seq_std * seq[..., -1:]
        nbr = (nbr - self.nbr_mean) / self.nbr_std * nbr[..., -1:]
        txn_n = (txn - self.txn_mean) / self.txn_std
        parts = [self.txn_mlp(txn_n)]
        b = txn.shape[0]
        if self.arch in ("fused", "tcn"):
            h = seq.shape[2]
            seq_rows = seq.reshape(2 * b, h, F_SEQ + self.event_dim)
            steps = self.tcn(seq_rows.transpose(1, 2))  # (2B, C, H), causal along H
            steps = self.tcn_attention(steps)
            parts.append(pair_rows(steps[:, :, -1]))
        if self.arch in ("fused", "gnn"):
            centre = txn_n[:, 2 * F_SEQ : F_TXN].reshape(b, 2, F_AGG)
            txn_edge = torch.cat([txn_n[:, :F_SEQ], txn_n[:, F_TXN:]], -1) if self.extra_dim else txn_n[:, :F_SEQ]
            parts.append(self.gnn(nbr, incoming, centre, txn_edge))
        joined = torch.cat(parts, -1)
        return (self.out(self.head(joined)) + self.branch_logits(joined)).squeeze(-1)
