"""Tiny generated datasets for smoke runs and tests, in the formats the upstream loaders read.

Images are discs of random colour and size on a plain random background: structured enough for a
few training steps to move the losses, small enough to train on a CPU. Every file is a function of
`seed` alone, so two calls with the same arguments write the same bytes.

    python -m ganpatch.fake_data cifar10 ./data --images 64      # ./data/cifar-10-batches-py/
    python -m ganpatch.fake_data cifar10 ./data --tarball        # + ./data/cifar-10-python.tar.gz
    python -m ganpatch.fake_data images ./pngs --images 32 --resolution 32

`cifar10` writes torchvision's extracted format (pickled dicts with a uint8 `data` array of rows
laid out as CHW and a `labels` list; five training batches, a test batch and `batches.meta`), which
torchvision's `CIFAR10`, BigGAN's `C10` and the StyleGAN `dataset_tool.py` (from the tarball) read.
The files are not the real CIFAR-10, so their MD5 sums differ: loaders that verify them must be told
not to (ganpatch's patched trees read offline copies without the check).
"""
import argparse
import io
import os
import pickle
import tarfile

import numpy as np

CIFAR10_FOLDER = 'cifar-10-batches-py'
CIFAR10_TARBALL = 'cifar-10-python.tar.gz'
CIFAR10_TRAIN_BATCHES = [f'data_batch_{i}' for i in range(1, 6)]
CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


def disc_images(count: int, resolution: int = 32, seed: int = 0) -> np.ndarray:
    """`count` RGB images [N, H, W, 3] uint8: one disc each, of random colour, centre and radius."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:resolution, 0:resolution]
    images = np.empty([count, resolution, resolution, 3], dtype=np.uint8)
    for i in range(count):
        image = np.zeros([resolution, resolution, 3]) + rng.uniform(0, 80, 3)
        cx, cy = rng.uniform(resolution / 4, 3 * resolution / 4, 2)
        radius = rng.uniform(resolution / 8, 3 * resolution / 8)
        image[(x - cx) ** 2 + (y - cy) ** 2 < radius ** 2] = rng.uniform(0, 255, 3)
        images[i] = image.astype(np.uint8)
    return images


def _cifar10_files(images: int, seed: int) -> dict[str, bytes]:
    """File name -> pickled content of a CIFAR-10 copy with `images` training images."""
    per_batch = max(1, -(-images // len(CIFAR10_TRAIN_BATCHES)))
    files = {}
    for index, name in enumerate(CIFAR10_TRAIN_BATCHES + ['test_batch']):
        pixels = disc_images(per_batch, 32, seed=seed * 1000 + index)
        batch = {'batch_label': name,
                 'data': pixels.transpose(0, 3, 1, 2).reshape(per_batch, 3 * 32 * 32),
                 'labels': [(index * per_batch + i) % 10 for i in range(per_batch)],
                 'filenames': [f'{name}_{i:05d}.png' for i in range(per_batch)]}
        files[name] = pickle.dumps(batch)
    files['batches.meta'] = pickle.dumps({'label_names': CIFAR10_CLASSES, 'num_cases_per_batch': per_batch,
                                          'num_vis': 3 * 32 * 32})
    return files


def write_cifar10(root: str, images: int = 64, seed: int = 0, tarball: bool = False) -> str:
    """Writes `<root>/cifar-10-batches-py/` (and `<root>/cifar-10-python.tar.gz` with `tarball`).

    `images` training images are spread over the five training batches (at least one each); the test
    batch holds as many as one training batch. Returns the path of the extracted folder.
    """
    if images < 1:
        raise ValueError(f'images must be at least 1, got {images}')
    files = _cifar10_files(images, seed)
    folder = os.path.join(root, CIFAR10_FOLDER)
    os.makedirs(folder, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(content)
    if tarball:
        with tarfile.open(os.path.join(root, CIFAR10_TARBALL), 'w:gz') as tar:
            for name, content in files.items():
                member = tarfile.TarInfo(f'{CIFAR10_FOLDER}/{name}')
                member.size = len(content)
                member.mtime = 0
                tar.addfile(member, io.BytesIO(content))
    return folder


def write_image_folder(dest: str, images: int = 32, resolution: int = 32, seed: int = 0) -> str:
    """Writes `images` PNG files `000000.png`... of `resolution`² pixels into `dest` (a dataset_tool source)."""
    import PIL.Image  # Pillow is only needed for PNGs.
    if images < 1 or resolution < 4:
        raise ValueError(f'need images >= 1 and resolution >= 4, got {images} and {resolution}')
    os.makedirs(dest, exist_ok=True)
    for i, pixels in enumerate(disc_images(images, resolution, seed)):
        PIL.Image.fromarray(pixels).save(os.path.join(dest, f'{i:06d}.png'))
    return dest


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m ganpatch.fake_data', description=__doc__.split('\n\n')[0])
    kinds = parser.add_subparsers(dest='kind', required=True)
    cifar = kinds.add_parser('cifar10', help="torchvision's extracted CIFAR-10 format under DIR/cifar-10-batches-py")
    cifar.add_argument('dir')
    cifar.add_argument('--images', type=int, default=64, help='training images (default 64)')
    cifar.add_argument('--tarball', action='store_true', help='also write DIR/cifar-10-python.tar.gz')
    cifar.add_argument('--seed', type=int, default=0)
    folder = kinds.add_parser('images', help='a folder of PNG files (dataset_tool.py --source)')
    folder.add_argument('dir')
    folder.add_argument('--images', type=int, default=32, help='number of images (default 32)')
    folder.add_argument('--resolution', type=int, default=32, help='width and height in pixels (default 32)')
    folder.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.images < 1 or (args.kind == 'images' and args.resolution < 4):
        parser.error('--images must be >= 1 and --resolution >= 4')
    if args.kind == 'cifar10':
        path = write_cifar10(args.dir, args.images, args.seed, args.tarball)
    else:
        path = write_image_folder(args.dir, args.images, args.resolution, args.seed)
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
