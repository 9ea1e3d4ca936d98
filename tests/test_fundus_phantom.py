import numpy as np
import pytest
from scipy import ndimage

from bundle.data.fundus_phantom import GRADE_PRIORS, LESIONS, SEVERE_HE, generate_fundus_phantom


@pytest.fixture(scope="module")
def by_grade():
    return {g: [generate_fundus_phantom(64, seed=100 * g + s, grade=g) for s in range(3)] for g in range(5)}


def test_deterministic_and_seeds_differ():
    a, b, c = (generate_fundus_phantom(64, seed=3), generate_fundus_phantom(64, seed=3),
               generate_fundus_phantom(64, seed=4))
    assert np.array_equal(a.image, b.image) and a.params == b.params
    assert not np.array_equal(a.image, c.image)


def test_outputs_shapes_ranges_and_fov(by_grade):
    ph = by_grade[3][0]
    assert ph.image.shape == (64, 64, 3) and ph.image.dtype == np.float32
    assert 0.0 <= ph.image.min() and ph.image.max() <= 1.0
    assert set(ph.lesions) == set(LESIONS) and all(m.shape == (64, 64) and m.dtype == bool for m in ph.lesions.values())
    assert set(np.unique(ph.vessels)) <= {0, 1, 2}
    # dark surround, reddish inside: red > green > blue on average inside the field of view
    inside, outside = ph.image[ph.fov], ph.image[~ph.fov]
    assert outside.mean() < 0.1 < inside.mean()
    r, g, b = inside.mean(0)
    assert r > g > b
    # a disc of ~1/6 FOV diameter, brighter than the rest of the fundus
    frac = ph.disc.sum() / ph.fov.sum()
    assert 0.01 < frac < 0.06
    assert ph.image[ph.disc].mean() > inside.mean() + 0.15
    # vessels are darker than the background they cross; veins darker than arteries
    ph = generate_fundus_phantom(128, seed=5)  # vessels are a few pixels wide only at the training size
    near_disc = ndimage.binary_dilation(ph.disc, iterations=3)
    for label in (1, 2):  # each vessel class against the background right beside it
        v = (ph.vessels == label) & ~near_disc
        ring = ndimage.binary_dilation(v, iterations=2) & (ph.vessels == 0) & ph.fov & ~near_disc
        assert ph.image[v, 1].mean() < 0.93 * ph.image[ring, 1].mean(), label
    art, vein = (ph.vessels == 1) & ~near_disc, (ph.vessels == 2) & ~near_disc
    assert ph.image[vein, 1].mean() < ph.image[art, 1].mean()
    assert 0.04 < (ph.vessels > 0).sum() / ph.fov.sum() < 0.4


def test_lesions_follow_the_grade(by_grade):
    for ph in by_grade[0]:
        assert not any(m.any() for m in ph.lesions.values()) and sum(ph.params["lesion_counts"].values()) == 0
    for ph in by_grade[1]:
        c = ph.params["lesion_counts"]
        assert c["ma"] >= 1 and c["he"] == c["ex"] == c["se"] == c["laser"] == c["nv"] == 0
    for ph in by_grade[2]:
        c = ph.params["lesion_counts"]
        assert c["he"] + c["ex"] + c["se"] >= 1 and c["he"] < SEVERE_HE and c["nv"] == c["laser"] == 0
    for ph in by_grade[3]:
        assert ph.params["lesion_counts"]["he"] >= SEVERE_HE and ph.lesions["he"].any()
    for ph in by_grade[4]:
        c = ph.params["lesion_counts"]
        assert c["nv"] + c["laser"] >= 1 and (ph.lesions["nv"].any() or ph.lesions["laser"].any())
    # haemorrhages are dark red, exudates bright yellow
    ph = by_grade[3][0]
    inside = ph.image[ph.fov & ~ph.disc].mean(0)
    assert ph.image[ph.lesions["he"]].mean() < inside.mean()
    ex = next(p for g in (2, 3, 4) for p in by_grade[g] if p.lesions["ex"].any())
    assert ex.image[ex.lesions["ex"], 1].mean() > ex.image[ex.fov & ~ex.disc, 1].mean()


def test_lesions_avoid_the_disc(by_grade):
    for g in (2, 3, 4):
        for ph in by_grade[g]:
            for k in ("ma", "he", "ex", "se", "laser"):
                assert (ph.lesions[k] & ph.disc).sum() <= 0.1 * max(ph.lesions[k].sum(), 1), (g, k)


def test_priors_overlap_between_neighbouring_grades():
    # grades are learnable but not trivially separable: neighbouring grades share lesion-count ranges
    assert GRADE_PRIORS["ma"][1] < GRADE_PRIORS["ma"][2] and GRADE_PRIORS["he"][2] > 0 and GRADE_PRIORS["ex"][2] > 0
    counts = [generate_fundus_phantom(32, seed=s, grade=g).params["lesion_counts"]["ma"]
              for g in (1, 2) for s in range(12)]
    assert set(counts[:12]) & set(counts[12:])


def test_left_eye_is_mirrored_and_bad_arguments():
    eyes = {generate_fundus_phantom(48, seed=s).params["eye"] for s in range(8)}
    assert eyes == {"OD", "OS"}
    od = next(generate_fundus_phantom(48, seed=s) for s in range(8)
              if generate_fundus_phantom(48, seed=s).params["eye"] == "OD")
    cols = np.where(od.disc.any(0))[0]
    assert cols.mean() > 24, "right eye: disc on the right (nasal) side"
    with pytest.raises(ValueError, match="size"):
        generate_fundus_phantom(16)
    with pytest.raises(ValueError, match="grade"):
        generate_fundus_phantom(64, grade=7)
