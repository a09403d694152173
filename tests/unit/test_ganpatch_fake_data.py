"""ganpatch.fake_data: the tiny CIFAR-10 reads as CIFAR-10 (torchvision's reader through the offline
`LocalCIFAR10` of the pytorch-gan-collections overlay), the tarball holds the same files as the folder,
the same seed writes the same bytes, and the PNG folder is what dataset_tool.py reads."""

import importlib.util
import pickle
import tarfile

import numpy as np
import PIL.Image
import pytest

from ganpatch import fake_data

OVERLAY_FLAGS = fake_data.__file__.rsplit('/common/', 1)[0] + '/pytorch-gan-collections/ganpatch_flags.py'


@pytest.fixture(scope='module')
def local_cifar10():
    """The overlay's LocalCIFAR10 (torchvision's CIFAR10 without MD5 sums); importing it defines absl flags."""
    spec = importlib.util.spec_from_file_location('ganpatch_flags_under_test', OVERLAY_FLAGS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LocalCIFAR10


def files(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_cifar10_reads_as_cifar10(tmp_path, local_cifar10):
    folder = fake_data.write_cifar10(str(tmp_path), images=12, seed=3)
    assert folder == str(tmp_path / 'cifar-10-batches-py')
    assert sorted(files(tmp_path / 'cifar-10-batches-py')) == sorted(
        ['batches.meta', 'test_batch', *[f'data_batch_{i}' for i in range(1, 6)]])

    train = local_cifar10(str(tmp_path), train=True)
    test = local_cifar10(str(tmp_path), train=False)
    per_batch = 3  # ceil(12 / 5): every training batch holds the same count, at least 12 in all
    assert train.data.shape == (5 * per_batch, 32, 32, 3) and train.data.dtype == np.uint8
    assert test.data.shape == (per_batch, 32, 32, 3)
    assert train.classes == fake_data.CIFAR10_CLASSES
    assert all(0 <= label < 10 for label in train.targets + test.targets)
    # Rows are CHW as in CIFAR-10, so the reader's HWC images are the generated discs exactly.
    np.testing.assert_array_equal(train.data[:per_batch], fake_data.disc_images(per_batch, 32, seed=3 * 1000))
    image, label = train[0]
    assert isinstance(image, PIL.Image.Image) and image.size == (32, 32) and image.mode == 'RGB'
    assert isinstance(label, int)
    # Not one flat colour: a disc on a background.
    assert len(np.unique(train.data[0].reshape(-1, 3), axis=0)) == 2


def test_cifar10_batches_carry_the_real_keys(tmp_path):
    fake_data.write_cifar10(str(tmp_path), images=5)
    with open(tmp_path / 'cifar-10-batches-py' / 'data_batch_1', 'rb') as f:
        batch = pickle.load(f, encoding='latin1')
    assert set(batch) == {'batch_label', 'data', 'labels', 'filenames'}
    assert batch['data'].shape == (1, 3072) and batch['data'].dtype == np.uint8


def test_tarball_holds_the_folder(tmp_path):
    fake_data.write_cifar10(str(tmp_path), images=10, tarball=True)
    folder = files(tmp_path / 'cifar-10-batches-py')
    with tarfile.open(tmp_path / 'cifar-10-python.tar.gz') as tar:
        members = tar.getmembers()
        assert all(member.isfile() for member in members)
        archived = {member.name: tar.extractfile(member).read() for member in members}
    assert archived == {f'cifar-10-batches-py/{name}': content for name, content in folder.items()}


def test_same_seed_same_bytes(tmp_path):
    for name, seed in [('a', 0), ('b', 0), ('c', 1)]:
        fake_data.write_cifar10(str(tmp_path / name), images=10, seed=seed, tarball=True)
        fake_data.write_image_folder(str(tmp_path / name / 'png'), images=3, resolution=16, seed=seed)

    def snapshot(name):
        root = tmp_path / name
        return (files(root / 'cifar-10-batches-py'), (root / 'cifar-10-python.tar.gz').read_bytes(), files(root / 'png'))

    assert snapshot('a') == snapshot('b')
    different = [x != y for x, y in zip(snapshot('a'), snapshot('c'))]
    assert all(different)


def test_image_folder(tmp_path):
    dest = fake_data.write_image_folder(str(tmp_path / 'pngs'), images=4, resolution=16, seed=2)
    assert sorted(p.name for p in (tmp_path / 'pngs').iterdir()) == [f'{i:06d}.png' for i in range(4)]
    expected = fake_data.disc_images(4, 16, seed=2)
    for i in range(4):
        with PIL.Image.open(f'{dest}/{i:06d}.png') as image:
            assert image.size == (16, 16) and image.mode == 'RGB'
            np.testing.assert_array_equal(np.asarray(image), expected[i])


def test_command_line(tmp_path, capsys):
    fake_data.main(['cifar10', str(tmp_path / 'data'), '--images', '64', '--tarball'])
    assert capsys.readouterr().out.strip() == f'wrote {tmp_path}/data/cifar-10-batches-py'
    assert (tmp_path / 'data' / 'cifar-10-python.tar.gz').is_file()
    fake_data.main(['images', str(tmp_path / 'pngs'), '--images', '2', '--resolution', '8'])
    assert len(list((tmp_path / 'pngs').iterdir())) == 2
    for argv in [['cifar10', str(tmp_path / 'x'), '--images', '0'], ['images', str(tmp_path / 'y'), '--resolution', '2']]:
        with pytest.raises(SystemExit) as exit_info:
            fake_data.main(argv)
        assert exit_info.value.code == 2
        assert '--images must be >= 1 and --resolution >= 4' in capsys.readouterr().err
    assert not (tmp_path / 'x').exists() and not (tmp_path / 'y').exists()
