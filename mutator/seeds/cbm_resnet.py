"""Channel-Bench-Macro ResNet space (seed "cbm-resnet").

Style: width list. `WIDTHS = [c0, ..., c6]` holds the seven searchable widths, one literal each;
every coupling (block input/output = c0 or c4) is computed in code. Set to the middle key
2222222 (92.95 % mean CIFAR-10 accuracy, rank 11,627 of 16,384: room to search). Stem 3x3 conv 3 -> c0, then five residual blocks
(conv3x3-BN-ReLU-conv3x3-BN, identity added when stride is 1) written (in, mid, out, stride):
(c0, c1, c0, 1), (c0, c2, c0, 1), (c0, c3, c4, 2), (c4, c5, c4, 1), (c4, c6, c4, 1); global average
pool; linear c4 -> classes. Convs are bias-free, the linear has a bias, so the build matches the
table's `params` and (fvcore, conv + linear, 16x16 input) `flops`.
About 3.84M parameters at 3x32x32 with 10 classes.
"""
import torch
import torch.nn as nn

WIDTHS = [128, 128, 128, 256, 256, 256, 256]


def supported_hyperparameters():
    return {'lr', 'momentum'}


class Block(nn.Module):
    def __init__(self, inp, mid, oup, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, oup, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(oup)
        self.relu = nn.ReLU(inplace=True)
        self.use_res = stride == 1 and inp == oup

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.use_res:
            out = out + x
        return self.relu(out)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        num_classes = out_shape[0]
        c0, c1, c2, c3, c4, c5, c6 = WIDTHS
        self.stem = nn.Sequential(
            nn.Conv2d(in_shape[1], c0, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c0),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            Block(c0, c1, c0, 1),
            Block(c0, c2, c0, 1),
            Block(c0, c3, c4, 2),
            Block(c4, c5, c4, 1),
            Block(c4, c6, c4, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c4, num_classes)

    def forward(self, x):
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = (nn.CrossEntropyLoss().to(self.device),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])

    def learn(self, train_data):
        self.train()
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criteria[0](self(inputs), labels)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 3)
            self.optimizer.step()
