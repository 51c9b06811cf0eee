"""The text, composition and structure views: real robocrys, MiniLM, Magpie and spglib, offline, cached, never
crashing."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule

from ase_moma.modalities import CompositionModality, Describer, StructureModality, TextModality


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return TextModality(cache=tmp_path_factory.mktemp("descriptions"))


def test_composition_statistics_are_magpie_values():
    composition = CompositionModality()
    encoded = composition.encode([bulk("NaCl", "rocksalt", 5.64), bulk("Si", "diamond", 5.43)])
    labels = composition.labels()
    assert composition.width == len(labels) == 132 and encoded.present.all()
    row = dict(zip(labels, encoded.features[0]))
    assert row["MagpieData mean Number"] == pytest.approx(14.0)  # Na 11, Cl 17
    assert row["MagpieData range Number"] == pytest.approx(6.0)
    assert dict(zip(labels, encoded.features[1]))["MagpieData avg_dev Number"] == pytest.approx(0.0)
    assert composition.identity() == CompositionModality().identity()


def test_structure_statistics_of_diamond_silicon():
    structure = StructureModality()
    encoded = structure.encode([bulk("Si", "diamond", 5.43)])
    row = dict(zip(structure.labels(), encoded.features[0]))
    assert structure.width == len(structure.labels()) == 20 and encoded.present.all()
    assert row["volume per atom (Å³)"] == pytest.approx(5.43 ** 3 / 8)
    assert row["density (g/cm³)"] == pytest.approx(2.33, abs=0.01)
    assert row["nearest distance mean (Å)"] == pytest.approx(5.43 * np.sqrt(3) / 4)
    assert row["coordination min"] == row["coordination max"] == 4
    assert row["space group number"] == 227 and row["point group order"] == 48


def test_structure_statistics_ignore_rotation_translation_and_repetition():
    layered = bulk("C", "hcp", a=2.46, c=6.7)  # two atoms a layer apart: one wide gap between planes
    layered.center(vacuum=4.0, axis=2)
    features = StructureModality().encode([layered]).features[0]
    moved = layered.repeat((2, 3, 2))
    moved.rotate(37, "x", rotate_cell=True)
    moved.translate([0.4, -1.2, 0.7])
    np.testing.assert_allclose(StructureModality().encode([moved]).features[0], features, rtol=1e-6, atol=1e-6)
    slabs = dict(zip(StructureModality().labels(), features))
    assert slabs["empty slab widest (Å)"] > 2 * slabs["empty slab second (Å)"]


def test_a_molecule_has_no_structure_view():
    encoded = StructureModality().encode([molecule("H2O"), bulk("Cu", "fcc", 3.61)])
    assert encoded.present.tolist() == [False, True] and "no full periodic cell" in encoded.missing[0]
    assert not encoded.features[0].any()


def test_descriptions_are_cached_by_structure(tmp_path):
    first = Describer(tmp_path)
    salt = bulk("NaCl", "rocksalt", 5.64)
    text, missing = first.describe(salt)
    assert missing is None and "Fm-3m" in text and "octahedra" in text
    again = Describer(tmp_path)  # a new process would find the same file
    assert again.describe(salt.copy()) == (text, None)
    assert again.counts["cached"] == 1 and again.counts["described"] == 0
    moved = salt.copy()
    moved.positions[0] += 0.1
    assert again.describe(moved)[0] is not None and again.counts["described"] == 1


def test_a_description_reads_the_same_in_every_process(tmp_path):
    """robocrys orders a polyhedron's kinds of connection by Python's per-process string hash; the text kept
    lists them alphabetically, and numbers robocrys writes as NumPy scalars read as numbers."""
    from ase_moma.modalities.descriptions import canonical

    text, _ = Describer(tmp_path).describe(bulk("NaCl", "rocksalt", 5.64))
    assert "a mixture of corner and edge-sharing NaCl6 octahedra" in text
    for order in ("face, edge, and corner", "edge, corner, and face", "corner, edge, and face"):
        assert canonical(f"to form a mixture of distorted {order}-sharing SBa4Zr2 octahedra.") == \
            "to form a mixture of distorted corner, edge, and face-sharing SBa4Zr2 octahedra."
    assert canonical("one sheet oriented in the (np.int64(0), np.int64(0), np.int64(1)) direction") == \
        "one sheet oriented in the (0, 0, 1) direction"


def test_a_molecular_crystal_is_described_offline_and_robocrys_is_left_as_it_was(tmp_path, monkeypatch):
    """A zero-dimensional crystal makes robocrys name its molecules: the namer ase-moma lends it never asks
    PubChem (a screening node has no network; where openbabel is missing robocrys cannot write the SMILES it
    would ask with at all), and robocrys is given its own namer back afterwards."""
    from robocrys.condense import condenser, molecule as robocrys_molecule

    def no_network(*args, **kwargs):
        raise AssertionError("robocrys looked a molecule up online")

    monkeypatch.setattr(robocrys_molecule, "get_compounds", no_network)
    crystal = molecule("CO2")
    crystal.cell, crystal.pbc = [6.0, 6.0, 6.0], True
    built = condenser.MoleculeNamer
    text, missing = Describer(tmp_path).describe(crystal)
    assert missing is None and "zero-dimensional" in text
    assert condenser.MoleculeNamer is built


def test_a_structure_without_a_description_is_missing_not_a_crash(text):
    encoded = text.encode([molecule("H2O"), bulk("Cu", "fcc", 3.6)])
    assert encoded.present.tolist() == [False, True]
    assert "periodic" in encoded.missing[0] and not encoded.features[0].any()
    assert np.linalg.norm(encoded.features[1]) == pytest.approx(1.0)


def test_similar_crystals_read_alike(text):
    """The real encoder: rock salts describe alike, and unlike a covalent diamond lattice."""
    salt, potash, silicon = text.encode([bulk("NaCl", "rocksalt", 5.64), bulk("KCl", "rocksalt", 6.29),
                                         bulk("Si", "diamond", 5.43)]).features
    assert salt @ potash > salt @ silicon + 0.05


def test_long_descriptions_are_chunked_not_cut(text):
    salt = text.describer.describe(bulk("NaCl", "rocksalt", 5.64))[0]
    silicon = text.describer.describe(bulk("Si", "diamond", 5.43))[0]
    long = " ".join([salt] * 6 + [silicon] * 6)
    pieces = text.chunks(long)
    assert len(pieces) > 1 and all(count <= text.max_tokens - 2 for _, count in pieces)
    assert " ".join(piece for piece, _ in pieces).split() == long.split()  # every word is read
    ours = text.embed_text(long)
    cut = text._model.encode([long], convert_to_numpy=True)[0]  # the encoder alone reads the first 256 tokens
    reference = text.embed_text(silicon)
    assert ours @ reference > cut @ reference + 0.05


def test_embeddings_are_cached_beside_the_descriptions(text):
    salt = bulk("NaCl", "rocksalt", 5.70)
    first = text.encode([salt]).features[0]
    spent = text.seconds_encoding
    again = text.encode([salt.copy()]).features[0]
    assert text.seconds_encoding == spent  # read back, no MiniLM pass
    np.testing.assert_array_equal(again, first)
    np.testing.assert_allclose(first, text.embed_text(text.describer.describe(salt)[0]), atol=1e-12)
    assert list((text.describer.folder / "embeddings").rglob("*.npy"))
