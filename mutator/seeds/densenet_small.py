"""Small DenseNet-BC (seed "densenet-small").

Style: channel concatenation. Widths come from `growth_rate = 12` (each bottleneck layer adds
that many channels by `torch.cat`) and `num_init_features = 24` (stem); the running width is
tracked in `num_features`, and each transition halves it. `block_config = (4, 4, 4)` layers per block.
About 103k parameters at 3x32x32 with 10 classes.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def supported_hyperparameters():
    return {'lr', 'momentum'}


class Bottleneck(nn.Module):
    def __init__(self, in_planes, growth_rate, bn_size):
        super().__init__()
        inter = bn_size * growth_rate
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, inter, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x):
        new = self.conv1(F.relu(self.bn1(x)))
        new = self.conv2(F.relu(self.bn2(new)))
        return torch.cat([x, new], 1)


class Transition(nn.Module):
    def __init__(self, in_planes, out_planes):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(self.conv(F.relu(self.bn(x))))


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        num_classes = out_shape[0]
        growth_rate = 12
        num_init_features = 24
        block_config = (4, 4, 4)
        bn_size = 4
        layers = [nn.Conv2d(in_shape[1], num_init_features, kernel_size=3, padding=1, bias=False)]
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            for _ in range(num_layers):
                layers.append(Bottleneck(num_features, growth_rate, bn_size))
                num_features = num_features + growth_rate
            if i != len(block_config) - 1:
                out_features = num_features // 2
                layers.append(Transition(num_features, out_features))
                num_features = out_features
        layers += [nn.BatchNorm2d(num_features), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))

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
