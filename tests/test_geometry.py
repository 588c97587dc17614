"""Specification of benchmark.core.geometry: every op against a brute-force loop reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.core.geometry import (
    chamfer_distance,
    estimate_normals,
    farthest_point_sample,
    hausdorff_distance,
    index_points,
    knn,
    nearest_neighbor,
    normalize_unit_sphere,
    pairwise_sq_dists,
    random_rotation,
    rotate,
)


def cloud(b: int, n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3, generator=g, dtype=dtype)


# ----------------------------------------------------------------- brute-force references


def ref_sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0], a.shape[1], b.shape[1]))
    for i in range(a.shape[0]):
        for n in range(a.shape[1]):
            for m in range(b.shape[1]):
                out[i, n, m] = sum((a[i, n, c] - b[i, m, c]) ** 2 for c in range(a.shape[2]))
    return out


def ref_knn(x: np.ndarray, q: np.ndarray, k: int, exclude_self: bool = False):
    d = ref_sq_dists(q, x)
    idx = np.zeros((x.shape[0], q.shape[1], k), dtype=np.int64)
    dist = np.zeros((x.shape[0], q.shape[1], k))
    for i in range(x.shape[0]):
        for n in range(q.shape[1]):
            cand = [(d[i, n, m], m) for m in range(x.shape[1]) if not (exclude_self and m == n)]
            cand.sort()
            idx[i, n] = [m for _, m in cand[:k]]
            dist[i, n] = [v for v, _ in cand[:k]]
    return idx, dist


def ref_directed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[B, N]: squared distance from each point of a to its nearest point of b."""
    return ref_sq_dists(a, b).min(axis=2)


def ref_fps(x: np.ndarray, m: int, first: list[int]) -> np.ndarray:
    out = np.zeros((x.shape[0], m), dtype=np.int64)
    for i in range(x.shape[0]):
        chosen = [first[i]]
        while len(chosen) < m:
            best, best_d = -1, -1.0
            for p in range(x.shape[1]):
                if p in chosen:
                    continue
                d = min(float(((x[i, p] - x[i, c]) ** 2).sum()) for c in chosen)
                if d > best_d:
                    best, best_d = p, d
            chosen.append(best)
        out[i] = chosen[:m]
    return out


def brute_nn_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a.unsqueeze(2) - b.unsqueeze(1)) ** 2).sum(-1).min(dim=2).values


# ----------------------------------------------------------------- pairwise / gather


def test_pairwise_sq_dists_matches_loops():
    a, b = cloud(2, 7, seed=1), cloud(2, 9, seed=2)
    np.testing.assert_allclose(pairwise_sq_dists(a, b).numpy(), ref_sq_dists(a.numpy(), b.numpy()), atol=1e-10)


def test_pairwise_sq_dists_is_nonnegative_on_identical_points():
    a = cloud(2, 8, seed=3, dtype=torch.float32) * 100 + 1000
    assert (pairwise_sq_dists(a, a) >= 0).all()


def test_pairwise_sq_dists_gradient_matches_autograd_of_difference():
    a = cloud(2, 6, seed=4).requires_grad_()
    b = cloud(2, 5, seed=5).requires_grad_()
    assert torch.autograd.gradcheck(pairwise_sq_dists, (a, b))


def test_index_points_gathers_2d_and_3d_indices():
    x = cloud(2, 10, seed=6)
    idx2 = torch.tensor([[0, 9, 3], [5, 5, 1]])
    idx3 = torch.tensor([[[0, 1], [2, 3]], [[9, 8], [7, 6]]])
    out2, out3 = index_points(x, idx2), index_points(x, idx3)
    assert out2.shape == (2, 3, 3) and out3.shape == (2, 2, 2, 3)
    for i in range(2):
        for s in range(3):
            assert torch.equal(out2[i, s], x[i, idx2[i, s]])
        for s in range(2):
            for k in range(2):
                assert torch.equal(out3[i, s, k], x[i, idx3[i, s, k]])


def test_index_points_rejects_batch_mismatch():
    with pytest.raises(ValueError, match="batch size"):
        index_points(cloud(2, 5), torch.zeros(3, 4, dtype=torch.long))


# ----------------------------------------------------------------- knn


def test_knn_matches_loops():
    x = cloud(2, 20, seed=7)
    idx, dist = knn(x, 4)
    ridx, rdist = ref_knn(x.numpy(), x.numpy(), 4)
    np.testing.assert_array_equal(idx.numpy(), ridx)
    np.testing.assert_allclose(dist.numpy(), rdist, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5])  # 1 and 2 take the min-based search, more a top-k
def test_knn_with_separate_query_matches_loops(k):
    x, q = cloud(3, 15, seed=8), cloud(3, 11, seed=9)
    idx, dist = knn(x, k, q)
    ridx, rdist = ref_knn(x.numpy(), q.numpy(), k)
    assert idx.shape == (3, 11, k)
    np.testing.assert_array_equal(idx.numpy(), ridx)
    np.testing.assert_allclose(dist.numpy(), rdist, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_knn_exclude_self_matches_loops(k):
    x = cloud(2, 12, seed=10)
    idx, dist = knn(x, k, exclude_self=True)
    ridx, rdist = ref_knn(x.numpy(), x.numpy(), k, exclude_self=True)
    np.testing.assert_array_equal(idx.numpy(), ridx)
    np.testing.assert_allclose(dist.numpy(), rdist, atol=1e-12)


def test_knn_exclude_self_keeps_duplicate_points_as_neighbours():
    x = cloud(1, 6, seed=11)
    x[0, 4] = x[0, 1]  # point 4 duplicates point 1
    idx, dist = knn(x, 1, exclude_self=True)
    assert idx[0, 1, 0] == 4 and idx[0, 4, 0] == 1
    assert dist[0, 1, 0] == 0 and dist[0, 4, 0] == 0
    assert not (idx[0, :, 0] == torch.arange(6)).any()
    idx2, dist2 = knn(x, 2, exclude_self=True)  # the duplicate first, then the next point
    assert idx2[0, 1, 0] == 4 and idx2[0, 4, 0] == 1 and idx2[0, 1, 1] not in (1, 4)
    assert torch.equal(dist2[..., 0], dist[..., 0])


def test_knn_chunked_equals_unchunked():
    x, q = cloud(2, 30, seed=12), cloud(2, 17, seed=13)
    for query, excl in ((None, True), (None, False), (q, False)):
        idx_a, dist_a = knn(x, 6, query, exclude_self=excl)
        idx_b, dist_b = knn(x, 6, query, exclude_self=excl, chunk_size=3)
        assert torch.equal(idx_a, idx_b)
        assert torch.equal(dist_a, dist_b)


def test_knn_distances_are_ascending():
    _, dist = knn(cloud(2, 40, seed=14, dtype=torch.float32), 8)
    assert (dist[..., 1:] >= dist[..., :-1]).all()


def test_knn_rejects_k_larger_than_available_points():
    x = cloud(2, 5)
    with pytest.raises(ValueError, match="k must be"):
        knn(x, 6)
    with pytest.raises(ValueError, match="k must be"):
        knn(x, 5, exclude_self=True)


def test_knn_rejects_wrong_shapes_naming_the_argument():
    with pytest.raises(ValueError, match=r"x must have shape \[B, N, 3\]"):
        knn(torch.zeros(2, 5, 2), 1)
    with pytest.raises(ValueError, match="query"):
        knn(cloud(2, 5), 1, cloud(3, 4))


# ----------------------------------------------------------------- nearest neighbour


def test_nearest_neighbor_values_and_indices_match_loops():
    a, b = cloud(3, 13, seed=15), cloud(3, 9, seed=16)
    dist, idx = nearest_neighbor(a, b)
    d = ref_sq_dists(a.numpy(), b.numpy())
    np.testing.assert_array_equal(idx.numpy(), d.argmin(axis=2))
    np.testing.assert_allclose(dist.numpy(), d.min(axis=2), atol=1e-12)


def test_nearest_neighbor_gradients_match_brute_force_min():
    a0, b0 = cloud(2, 10, seed=17), cloud(2, 8, seed=18)
    w = cloud(2, 10, seed=19)[..., 0]  # a non-uniform upstream gradient [B, N]
    a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    (nearest_neighbor(a, b, chunk_size=3)[0] * w).sum().backward()
    ra, rb = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    (brute_nn_torch(ra, rb) * w).sum().backward()
    torch.testing.assert_close(a.grad, ra.grad)
    torch.testing.assert_close(b.grad, rb.grad)


def test_nearest_neighbor_passes_gradcheck():
    a = cloud(2, 7, seed=20).requires_grad_()
    b = cloud(2, 6, seed=21).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, q: nearest_neighbor(p, q)[0], (a, b))


def test_nearest_neighbor_chunked_equals_unchunked():
    a, b = cloud(2, 25, seed=22), cloud(2, 19, seed=23)
    d1, i1 = nearest_neighbor(a, b)
    d3, i3 = nearest_neighbor(a, b, chunk_size=3)
    assert torch.equal(i1, i3) and torch.equal(d1, d3)


# ----------------------------------------------------------------- chamfer / hausdorff


@pytest.mark.parametrize("mode", ["adv2ori", "ori2adv", "both"])
def test_chamfer_distance_matches_loops(mode):
    a, b = cloud(2, 11, seed=24), cloud(2, 8, seed=25)
    fwd = ref_directed(a.numpy(), b.numpy()).mean(axis=1)
    bwd = ref_directed(b.numpy(), a.numpy()).mean(axis=1)
    want = {"adv2ori": fwd, "ori2adv": bwd, "both": fwd + bwd}[mode]
    np.testing.assert_allclose(chamfer_distance(a, b, mode=mode).numpy(), want, atol=1e-12)


@pytest.mark.parametrize("mode", ["adv2ori", "ori2adv", "both"])
def test_hausdorff_distance_matches_loops(mode):
    a, b = cloud(2, 11, seed=26), cloud(2, 8, seed=27)
    fwd = ref_directed(a.numpy(), b.numpy()).max(axis=1)
    bwd = ref_directed(b.numpy(), a.numpy()).max(axis=1)
    want = {"adv2ori": fwd, "ori2adv": bwd, "both": np.maximum(fwd, bwd)}[mode]
    np.testing.assert_allclose(hausdorff_distance(a, b, mode=mode).numpy(), want, atol=1e-12)


def test_chamfer_distance_of_a_cloud_to_itself_is_zero():
    a = cloud(2, 9, seed=28)
    assert torch.equal(chamfer_distance(a, a, mode="both"), torch.zeros(2, dtype=a.dtype))


def test_distances_reject_unknown_mode():
    a = cloud(1, 4)
    with pytest.raises(ValueError, match="unknown mode 'sym'"):
        chamfer_distance(a, a, mode="sym")
    with pytest.raises(ValueError, match="unknown mode"):
        hausdorff_distance(a, a, mode="sym")


# ----------------------------------------------------------------- farthest point sampling


def test_farthest_point_sample_matches_greedy_loop():
    x = cloud(3, 30, seed=29)
    got = farthest_point_sample(x, 8)
    np.testing.assert_array_equal(got.numpy(), ref_fps(x.numpy(), 8, [0, 0, 0]))


def test_farthest_point_sample_breaks_ties_by_the_first_index():
    grid = torch.stack(torch.meshgrid(*[torch.arange(3.0)] * 3, indexing="ij"), -1).reshape(1, 27, 3)
    x = torch.cat([grid, grid.flip(1)]).to(torch.float32)  # integer coordinates: many exact ties
    got = farthest_point_sample(x, 12)
    np.testing.assert_array_equal(got.numpy(), ref_fps(x.numpy(), 12, [0, 0]))


def test_farthest_point_sample_selects_distinct_points():
    x = cloud(2, 20, seed=30, dtype=torch.float32)
    x[:, 10:] = x[:, :10]  # every point duplicated: only 10 distinct positions
    idx = farthest_point_sample(x, 20)
    for row in idx:
        assert len(set(row.tolist())) == 20


def test_farthest_point_sample_random_start_is_reproducible_and_greedy():
    x = cloud(3, 25, seed=31)
    a = farthest_point_sample(x, 6, start="random", generator=torch.Generator().manual_seed(5))
    b = farthest_point_sample(x, 6, start="random", generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    np.testing.assert_array_equal(a.numpy(), ref_fps(x.numpy(), 6, a[:, 0].tolist()))


def test_farthest_point_sample_rejects_m_larger_than_n():
    with pytest.raises(ValueError, match="m must be"):
        farthest_point_sample(cloud(1, 5), 6)


# ----------------------------------------------------------------- transforms


def test_normalize_unit_sphere_centres_and_scales():
    x = cloud(3, 50, seed=32) * 4 + 7
    y, centre, scale = normalize_unit_sphere(x, return_params=True)
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(3, 3, dtype=x.dtype))
    torch.testing.assert_close(y.norm(dim=-1).amax(dim=1), torch.ones(3, dtype=x.dtype))
    assert centre.shape == (3, 1, 3) and scale.shape == (3, 1, 1)
    torch.testing.assert_close(y * scale + centre, x)


def test_normalize_unit_sphere_guards_zero_radius():
    y = normalize_unit_sphere(torch.full((1, 4, 3), 2.0))
    assert torch.equal(y, torch.zeros(1, 4, 3))


def test_random_rotation_is_orthonormal_with_det_one():
    for axis in ("x", "y", "z", None):
        r = random_rotation(5, axis=axis, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        assert r.shape == (5, 3, 3) and r.dtype == torch.float64
        torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3))
        torch.testing.assert_close(torch.linalg.det(r), torch.ones(5, dtype=torch.float64))


def test_axis_rotation_keeps_that_axis_coordinate():
    x = cloud(4, 12, seed=33)
    for c, axis in enumerate(("x", "y", "z")):
        y = rotate(x, random_rotation(4, axis=axis, generator=torch.Generator().manual_seed(c), dtype=x.dtype))
        torch.testing.assert_close(y[..., c], x[..., c])
        assert not torch.allclose(y, x)


def test_random_rotation_is_reproducible_with_a_seeded_generator():
    a = random_rotation(3, axis=None, generator=torch.Generator().manual_seed(9))
    b = random_rotation(3, axis=None, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_rotate_applies_row_vector_convention():
    x = cloud(2, 7, seed=34)
    r = random_rotation(2, axis=None, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    want = np.zeros((2, 7, 3))
    for i in range(2):
        for n in range(7):
            want[i, n] = r[i].numpy() @ x[i, n].numpy()
    np.testing.assert_allclose(rotate(x, r).numpy(), want, atol=1e-12)


def test_rotate_quarter_turn_about_y_maps_x_to_minus_z():
    c, s = math.cos(math.pi / 2), math.sin(math.pi / 2)
    r = torch.tensor([[[c, 0, s], [0, 1, 0], [-s, 0, c]]], dtype=torch.float64)
    out = rotate(torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64), r)
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.0, -1.0]]], dtype=torch.float64))


def test_rotate_rejects_wrong_rotation_shape():
    with pytest.raises(ValueError, match=r"rotation must have shape \[B, 3, 3\]"):
        rotate(cloud(2, 4), torch.eye(3))


# ----------------------------------------------------------------- normals


def test_estimate_normals_on_a_plane_are_plus_z():
    g = torch.Generator().manual_seed(35)
    xy = torch.rand(2, 40, 2, generator=g) * 2 - 1
    x = torch.cat([xy, torch.zeros(2, 40, 1)], dim=-1)
    n = estimate_normals(x, k=8)
    assert n.shape == (2, 40, 3)
    torch.testing.assert_close(n, torch.tensor([0.0, 0.0, 1.0]).expand(2, 40, 3), atol=1e-5, rtol=0)


def test_estimate_normals_on_a_sphere_point_outward():
    x = cloud(2, 400, seed=36, dtype=torch.float32)
    x = x / x.norm(dim=-1, keepdim=True)
    n = estimate_normals(x, k=10)
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(2, 400))
    cosine = (n * x).sum(-1)
    assert (cosine > 0.95).all(), cosine.min()


def test_estimate_normals_rejects_k_below_three():
    with pytest.raises(ValueError, match="k must be"):
        estimate_normals(cloud(1, 10), k=2)


@pytest.mark.parametrize("near", [6, 16])
@pytest.mark.parametrize("move", [0.0, 0.02, 0.3])
def test_reference_neighbours_answer_as_the_full_searches(move, near):
    """Candidate searches equal nearest_neighbor / knn (values and gradients), also where large
    moves send points to the wide tier or the full search (``near`` 6: two tiers; 16: one)."""
    from benchmark.core.geometry import ReferenceNeighbours

    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 200, 3, generator=g) * 2 - 1
    step = torch.randn(3, 200, 3, generator=g)
    adv = (ref + move * step / step.norm(dim=-1, keepdim=True) * torch.rand(3, 200, 1, generator=g))
    local = ReferenceNeighbours(ref, m=16, near=near)
    assert len(local.tiers) == (2 if near < 16 else 1)
    a = adv.clone().requires_grad_(True)
    b = adv.clone().requires_grad_(True)
    d_local = local.nearest_reference(a)[0]
    d_full = nearest_neighbor(b, ref)[0]
    torch.testing.assert_close(d_local, d_full)
    _, k_local = local.knn_within(a, 4)
    _, k_full = knn(b, 4, exclude_self=True)
    torch.testing.assert_close(k_local, k_full)
    (d_local.sum() + k_local.sum()).backward()
    (d_full.sum() + k_full.sum()).backward()
    torch.testing.assert_close(a.grad, b.grad)
    rows = torch.tensor([2, 0])
    torch.testing.assert_close(local.knn_within(adv[rows], 4, rows)[1], knn(adv[rows], 4, exclude_self=True)[1])
    if move >= 0.3:
        assert local.fallbacks > 0  # the bound failed somewhere and the full search answered
    with pytest.raises(ValueError, match="candidates"):
        local.knn_within(adv, 16)


def test_reference_neighbours_tiers_widen_once_the_near_candidates_stop_sufficing():
    """Small moves: the near tier answers every point. Once over a quarter of the points fail
    its bound, that kind of query starts at the wide tier; every answer equals the full
    search's, before and after, for all clouds and for a subset of them."""
    from benchmark.core.geometry import ReferenceNeighbours

    g = torch.Generator().manual_seed(2)
    ref = torch.rand(2, 400, 3, generator=g) * 2 - 1
    local = ReferenceNeighbours(ref, m=32, near=8)
    direction = torch.randn(2, 400, 3, generator=g)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    starts = []
    for move in (1e-4, 1e-4, 0.05, 0.05):
        adv = ref + move * direction
        torch.testing.assert_close(local.knn_within(adv, 4)[1], knn(adv, 4, exclude_self=True)[1])
        torch.testing.assert_close(local.nearest_reference(adv)[0], nearest_neighbor(adv, ref)[0])
        rows = torch.tensor([1])
        torch.testing.assert_close(local.knn_within(adv[rows], 4, rows)[1], knn(adv[rows], 4, exclude_self=True)[1])
        torch.testing.assert_close(local.nearest_reference(adv[rows], rows)[0], nearest_neighbor(adv[rows], ref[rows])[0])
        starts.append(dict(local._start))
    assert starts[0] == starts[1] == {"nearest": 0, "knn": 0}  # the near tier sufficed
    assert starts[-1]["knn"] == 1  # moves of 0.05 against 8 candidates: the knn queries start wide
    with pytest.raises(ValueError, match="candidates"):
        local.knn_within(ref, 32)
    # k above the near tier's width: answered from the wide tier directly
    torch.testing.assert_close(local.knn_within(ref, 12)[1], knn(ref, 12, exclude_self=True)[1])


@pytest.mark.parametrize("dense", [0.0, 2.0])
def test_reference_neighbours_fallbacks_whole_cloud_or_per_point_agree(dense, monkeypatch):
    """Points the candidates' bound cannot vouch for are searched again, per point or, when many
    fail in a cloud, over the whole cloud; both answer as the full searches."""
    from benchmark.core import neighbours
    from benchmark.core.geometry import ReferenceNeighbours

    monkeypatch.setattr(neighbours, "_DENSE_FALLBACK", dense)  # 0: every failing cloud whole; 2: never
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(4, 300, 3, generator=g) * 2 - 1
    adv = ref + 0.2 * torch.randn(4, 300, 3, generator=g)
    local = ReferenceNeighbours(ref, m=12)
    idx, dist = local.knn_within(adv, 5)
    assert local.fallbacks > 0
    full_idx, full_dist = knn(adv, 5, exclude_self=True)
    torch.testing.assert_close(dist, full_dist)
    near, near_idx = local.nearest_reference(adv)
    assert local.fallbacks > 0
    torch.testing.assert_close(near, nearest_neighbor(adv, ref)[0])


def test_estimate_normals_from_given_neighbours_equal_its_own_search():
    from benchmark.core.geometry import estimate_normals

    x = cloud(2, 300)
    wide = knn(x, 24)[0]
    assert torch.equal(estimate_normals(x, k=10, neighbours=wide), estimate_normals(x, k=10))
    with pytest.raises(ValueError, match="neighbours"):
        estimate_normals(x, k=10, neighbours=wide[..., :5])
